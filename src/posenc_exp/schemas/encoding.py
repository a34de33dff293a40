"""Schemas of ``conf/encoding``: the positional encodings (``posenc_exp.encodings``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from omegaconf import MISSING

from posenc_exp.checks import require_choice, require_int, require_memory, require_number, require_parameters
from posenc_exp.errors import ConfigError


class Encoding:
    """What the config checks read about every encoding: where it acts (``acts_on``, as the class's in
    ``posenc_exp.encodings``: ``input``, ``rotary``, ``bias`` or ``contextual``), whether ``encoding=randomized``
    can wrap it (``uses_positions``) and whether its config trains a position
    table (``trains_table``), which must then cover ``data.max_positions``."""

    acts_on: ClassVar[str] = "input"
    uses_positions: ClassVar[bool] = True  # whether encoding=randomized can wrap it (it reads token positions)

    @classmethod
    def trains_table(cls, encoding: Any) -> bool:
        return False


@dataclass
class NoPE(Encoding):
    uses_positions: ClassVar[bool] = False

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
        """``n_heads`` and ``max_positions`` >= 1 (:func:`check_bias`)."""
        check_bias(encoding)


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
class XPos(Encoding):
    """``posenc_exp.recent_encodings.XPos`` (Sun et al. 2022): RoPE's rotation with a decay; no ``scaling``."""

    acts_on: ClassVar[str] = "rotary"

    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    max_positions: int = MISSING
    base: float = MISSING
    scale_base: float = MISSING
    gamma: float = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """The rotary checks (:func:`check_rotary`), ``scale_base`` finite > 0, ``gamma`` finite >= 0."""
        check_rotary(encoding, "xpos")
        require_number("encoding.scale_base", encoding.scale_base, low=0, allowed="a finite number > 0")
        require_number("encoding.gamma", encoding.gamma, low=0, allowed="a finite number >= 0", inclusive=True)


def check_bias(encoding: Any) -> None:
    """What every bias family checks: ``n_heads`` and ``max_positions`` >= 1."""
    require_int("encoding.n_heads", encoding.n_heads, 1)
    require_int("encoding.max_positions", encoding.max_positions, 1)


@dataclass
class KERPLE(Encoding):
    """``posenc_exp.recent_encodings.KERPLE`` (Chi et al. 2022), logarithmic variant."""

    acts_on: ClassVar[str] = "bias"

    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    eps: float = MISSING
    max_positions: int = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """``n_heads``, ``max_positions`` >= 1, ``eps`` finite > 0."""
        check_bias(encoding)
        require_number("encoding.eps", encoding.eps, low=0, allowed="a finite number > 0")


@dataclass
class FIRE(Encoding):
    """``posenc_exp.recent_encodings.FIRE`` (Li et al. 2024)."""

    acts_on: ClassVar[str] = "bias"

    _target_: str = MISSING
    n_heads: int = MISSING
    causal: bool = MISSING
    mlp_width: int = MISSING
    init_c: float = MISSING
    init_threshold: float = MISSING
    eps: float = MISSING
    max_positions: int = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """``n_heads``, ``max_positions``, ``mlp_width`` >= 1; ``init_c``, ``init_threshold`` finite > 0, ``eps``
        finite >= 0; the MLP in memory (``mlp_width (n_heads + 2) + n_heads`` weights)."""
        check_bias(encoding)
        require_int("encoding.mlp_width", encoding.mlp_width, 1)
        require_number("encoding.init_c", encoding.init_c, low=0, allowed="a finite number > 0")
        require_number("encoding.init_threshold", encoding.init_threshold, low=0, allowed="a finite number > 0")
        require_number("encoding.eps", encoding.eps, low=0, allowed="a finite number >= 0", inclusive=True)
        require_parameters(
            f"encoding.mlp_width={encoding.mlp_width}", encoding.mlp_width * (encoding.n_heads + 2) + encoding.n_heads
        )


@dataclass
class CoPE(Encoding):
    """``posenc_exp.recent_encodings.CoPE`` (Golovneva et al. 2024): positions counted from the queries and keys,
    not from the token positions (so ``encoding=randomized`` cannot wrap it)."""

    acts_on: ClassVar[str] = "contextual"
    uses_positions: ClassVar[bool] = False

    _target_: str = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    depth: int = MISSING
    causal: bool = MISSING
    num_embeddings: int = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """A causal model, ``d_model``, ``n_heads``, ``depth`` >= 1, ``n_heads`` dividing ``d_model``,
        ``num_embeddings`` >= 2 (interpolation needs two), the ``num_embeddings x depth x d_head`` tables in
        memory."""
        if not encoding.causal:
            raise ConfigError(
                "encoding=cope counts gates from key j up to query i (Golovneva et al. 2024, causal): set "
                "model.causal=true"
            )
        for key in ("d_model", "n_heads", "depth"):
            require_int(f"encoding.{key}", encoding[key], 1)
        if encoding.d_model % encoding.n_heads:
            raise ConfigError(
                f"encoding.n_heads={encoding.n_heads} does not divide encoding.d_model={encoding.d_model}"
            )
        require_int("encoding.num_embeddings", encoding.num_embeddings, 2)
        keys = f"encoding.num_embeddings={encoding.num_embeddings} encoding.depth={encoding.depth}"
        require_parameters(keys, encoding.num_embeddings * encoding.depth * encoding.d_model // encoding.n_heads)


EVAL_POSITIONS = ("ordinary", "random")  # encoding=randomized's encoding.eval_positions


def _wrapped(spec: type) -> tuple[bool, Any]:
    """For the spec of ``encoding=randomized``'s wrapped option: whether it uses positions, and its
    ``trains_table(config)``. A built-in's schema says so torch-free; an extension's class (imported already by
    ``posenc_exp.schemas.spec_of``) is asked as the torch classes are: a ``PositionalEncoding`` other than NoPE,
    CoPE or Randomized uses positions, and an ``AbsoluteTable`` that is learnable trains its table."""
    if issubclass(spec, Encoding):
        return spec.uses_positions, spec.trains_table
    from posenc_exp.encodings import AbsoluteTable, NoPE, PositionalEncoding
    from posenc_exp.recent_encodings import CoPE, Randomized

    uses = issubclass(spec, PositionalEncoding) and not issubclass(spec, (Randomized, CoPE, NoPE))
    return uses, lambda config: issubclass(spec, AbsoluteTable) and bool(config.get("learnable", True))


@dataclass
class Randomized(Encoding):
    """``posenc_exp.recent_encodings.Randomized`` (Ruoss et al. 2023). The wrapped option's node (``base``) is
    typed by that option's own schema (composed from its YAML)."""

    uses_positions: ClassVar[bool] = False  # it draws them: it cannot wrap itself

    _target_: str = MISSING
    base: Any = MISSING
    max_positions: int = MISSING
    position_range: Optional[int] = MISSING  # noqa: UP045 - OmegaConf 2.3 reads typing.Optional, not X | None
    eval_positions: str = MISSING

    @classmethod
    def check_config(cls, encoding: Any) -> None:
        """A wrapped option (``encoding.base``, with ``_target_``) that uses positions, with its own checks (its
        keys named ``encoding.base.*``), ``max_positions`` >= 1, ``position_range`` null or >= ``max_positions``
        and, for a trained table, at most its rows, the candidate hashes in memory, a known ``eval_positions``.
        Torch-free for a built-in wrapped option (its spec, :func:`posenc_exp.schemas.spec_of`)."""
        from posenc_exp.schemas import check_target, spec_of

        base = encoding.get("base")
        if not hasattr(base, "get") or "_target_" not in base:
            example = base if isinstance(base, str) else "alibi"
            raise ConfigError(
                f"encoding.base={base} is not an encoding node: choose the wrapped option with "
                f"encoding@encoding.base=<option> (e.g. encoding@encoding.base={example})"
            )
        check_target(base, "encoding.base")
        base_spec = spec_of(base, "encoding.base")
        uses_positions, trains_table = _wrapped(base_spec)
        if not uses_positions:
            raise ConfigError(
                f"encoding.base={base_spec.__name__} is not allowed: expected an encoding that uses positions "
                "(learned, sinusoidal, rope, xpos, alibi, t5, kerple, fire)"
            )
        if hasattr(base_spec, "check_config"):
            try:
                base_spec.check_config(base)
            except ConfigError as error:
                raise ConfigError(str(error).replace("encoding.", "encoding.base.")) from None
        require_int("encoding.max_positions", encoding.max_positions, 1)
        position_range = encoding.position_range
        if position_range is not None:  # the drawn positions must cover the longest input (evaluation included)
            require_int(
                "encoding.position_range",
                position_range,
                encoding.max_positions,
                allowed=f"an integer >= encoding.max_positions={encoding.max_positions} (the longest input), or null",
            )
        position_range = encoding.max_positions if position_range is None else position_range
        # each draw hashes every candidate: a few int64 temporaries of position_range values per replica
        require_memory(f"encoding.position_range={position_range}", 64 * position_range, "the candidate hashes")
        if trains_table(base):
            rows = base.max_positions
            if position_range > rows:
                raise ConfigError(
                    f"encoding.position_range={position_range} is more than the {rows} rows of the wrapped table "
                    "(encoding.base.max_positions = data.max_positions): positions are drawn from "
                    "0..position_range-1; leave encoding.position_range at null, or wrap an encoding without a "
                    "trained table"
                )
        require_choice("encoding.eval_positions", encoding.eval_positions, EVAL_POSITIONS)


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
