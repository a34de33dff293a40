"""Schemas of ``conf/encoding``: the positional encodings (``posenc_exp.encodings``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from posenc_exp.checks import require_choice, require_int, require_number, require_parameters
from posenc_exp.errors import ConfigError


class Encoding:
    """What the config checks read about every encoding: where it acts (``acts_on``, as the class's in
    ``posenc_exp.encodings``: ``input``, ``rotary`` or ``bias``) and whether its config trains a position
    table (``trains_table``), which must then cover ``data.max_positions``."""

    acts_on: ClassVar[str] = "input"

    @classmethod
    def trains_table(cls, encoding: Any) -> bool:
        return False


@dataclass
class NoPE(Encoding):
    _target_: str = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """Nothing beyond the types: no keys."""


@dataclass
class Learned(Encoding):
    _target_: str = MISSING
    max_positions: int = MISSING
    d_model: int = MISSING
    init_std: float = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """``max_positions``, ``d_model`` >= 1, ``init_std`` finite >= 0, the ``max_positions x d_model`` table in
        memory."""
        require_int("encoding.max_positions", encoding.max_positions, 1)
        require_int("encoding.d_model", encoding.d_model, 1)
        require_number("encoding.init_std", encoding.init_std, low=0, allowed="a finite number >= 0", inclusive=True)
        keys = f"encoding.max_positions={encoding.max_positions} encoding.d_model={encoding.d_model}"
        require_parameters(keys, encoding.max_positions * encoding.d_model)

    @classmethod
    def trains_table(cls, encoding: Any) -> bool:
        return True


@dataclass
class Sinusoidal(Encoding):
    _target_: str = MISSING
    d_model: int = MISSING
    max_positions: int = MISSING
    learnable: bool = MISSING
    base: float = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """``d_model``, ``max_positions`` >= 1, ``base`` > 1 (so the wavelengths grow with the dimension), the
        ``max_positions x d_model`` table in memory."""
        require_int("encoding.d_model", encoding.d_model, 1)
        require_int("encoding.max_positions", encoding.max_positions, 1)
        require_number("encoding.base", encoding.base, low=1, allowed="a finite number > 1")
        keys = f"encoding.max_positions={encoding.max_positions} encoding.d_model={encoding.d_model}"
        require_parameters(keys, encoding.max_positions * encoding.d_model)

    @classmethod
    def trains_table(cls, encoding: Any) -> bool:
        """Only a learnable one: the fixed sinusoid is extended on demand."""
        return bool(encoding.get("learnable", False))


ROPE_SCALINGS = ("none", "linear", "ntk", "yarn")  # encoding.scaling: RoPE's extension methods
SCALING_LENGTHS = ("longer", "all")  # encoding.scaling_lengths


def check_rotary(encoding: Any, option: str) -> None:
    """What every rotary option (rope, xpos) checks: ``n_heads`` dividing ``d_model`` into an even head width
    (pairs are rotated), ``max_positions`` >= 1, ``base`` > 1, and the ``max_positions x d_head/2`` angle cache
    in memory."""
    require_int("encoding.d_model", encoding.d_model, 1)
    require_int("encoding.n_heads", encoding.n_heads, 1)
    d_model, n_heads = encoding.d_model, encoding.n_heads
    if d_model % n_heads or (d_model // n_heads) % 2:
        raise ConfigError(
            f"encoding={option} rotates pairs of dimensions: the head width model.d_model/model.n_heads="
            f"{d_model}/{n_heads} must be a whole, even number"
        )
    require_int("encoding.max_positions", encoding.max_positions, 1)
    require_number("encoding.base", encoding.base, low=1, allowed="a finite number > 1")
    require_parameters(
        f"encoding.max_positions={encoding.max_positions}", encoding.max_positions * d_model // n_heads / 8
    )


@dataclass
class RoPE(Encoding):
    """``posenc_exp.encodings.RoPE`` (Su et al. 2021), with its extension methods (``scaling``)."""

    acts_on: ClassVar[str] = "rotary"

    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    max_positions: int = MISSING
    base: float = MISSING
    scaling: str = MISSING
    scaling_factor: float = MISSING
    scaling_lengths: str = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """The rotary checks (:func:`check_rotary`); a known ``scaling`` and ``scaling_lengths``,
        ``scaling_factor`` >= 1 (and a head width > 2 for ``ntk``, whose exponent is ``d/(d-2)``)."""
        check_rotary(encoding, "rope")
        if "scaling" not in encoding:  # a user's rope-like YAML without the scaling keys
            return
        require_choice("encoding.scaling", encoding.scaling, ROPE_SCALINGS)
        require_choice("encoding.scaling_lengths", encoding.scaling_lengths, SCALING_LENGTHS)
        require_number(
            "encoding.scaling_factor", encoding.scaling_factor, low=1, allowed="a finite number >= 1", inclusive=True
        )
        d_model, n_heads = encoding.d_model, encoding.n_heads
        if encoding.scaling == "ntk" and d_model // n_heads <= 2:
            raise ConfigError(
                f"encoding.scaling=ntk raises the base to the power d/(d-2): the head width "
                f"model.d_model/model.n_heads={d_model}/{n_heads} must be > 2"
            )


@dataclass
class ALiBi(Encoding):
    acts_on: ClassVar[str] = "bias"

    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    max_positions: int = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """``n_heads`` and ``max_positions`` >= 1."""
        require_int("encoding.n_heads", encoding.n_heads, 1)
        require_int("encoding.max_positions", encoding.max_positions, 1)


@dataclass
class T5(Encoding):
    acts_on: ClassVar[str] = "bias"

    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    num_buckets: int = MISSING
    max_distance: int = MISSING
    init_std: float = MISSING
    max_positions: int = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """``n_heads``, ``max_positions`` >= 1; per direction at least 2 buckets, so that one is exact
        (``max_exact = buckets per direction / 2 >= 1``), and ``max_distance > max_exact`` (the log-spaced
        buckets divide by ``log(max_distance / max_exact)``); ``init_std`` finite >= 0; the table in memory."""
        require_int("encoding.n_heads", encoding.n_heads, 1)
        require_int("encoding.max_positions", encoding.max_positions, 1)
        directions = 1 if encoding.causal else 2
        require_int(
            "encoding.num_buckets",
            encoding.num_buckets,
            2 * directions,
            allowed=f"an integer >= {2 * directions} (2 per direction; encoding.causal={encoding.causal})",
        )
        keys = f"encoding.num_buckets={encoding.num_buckets} encoding.n_heads={encoding.n_heads}"
        require_parameters(keys, encoding.num_buckets * encoding.n_heads)
        max_exact = encoding.num_buckets // directions // 2
        require_int(
            "encoding.max_distance",
            encoding.max_distance,
            max_exact + 1,
            allowed=f"an integer > {max_exact}, the exact buckets per direction (encoding.num_buckets="
            f"{encoding.num_buckets} / {2 * directions})",
        )
        require_number("encoding.init_std", encoding.init_std, low=0, allowed="a finite number >= 0", inclusive=True)


@dataclass
class XPos:
    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    max_positions: int = MISSING
    base: float = MISSING
    scale_base: float = MISSING
    gamma: float = MISSING


@dataclass
class KERPLE:
    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    eps: float = MISSING
    max_positions: int = MISSING


@dataclass
class FIRE:
    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    mlp_width: int = MISSING
    init_c: float = MISSING
    init_threshold: float = MISSING
    eps: float = MISSING
    max_positions: int = MISSING


@dataclass
class CoPE:
    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    depth: int = MISSING
    causal: bool = MISSING
    num_embeddings: int = MISSING


@dataclass
class Randomized:
    """The wrapped option's node (``base``) is typed by that option's own schema (composed from its YAML)."""

    _target_: str = MISSING
    base: Any = MISSING
    max_positions: int = MISSING
    position_range: Optional[int] = MISSING  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional, not X | None
    eval_positions: str = MISSING


SCHEMAS = {
    "none": NoPE,
    "learned": Learned,
    "sinusoidal": Sinusoidal,
    "rope": RoPE,
    "alibi": ALiBi,
    "t5": T5,
    "xpos": XPos,
    "kerple": KERPLE,
    "fire": FIRE,
    "cope": CoPE,
    "randomized": Randomized,
}
