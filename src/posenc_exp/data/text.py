"""Real text: byte-level language modelling on a corpus every machine has, the Python standard library.

The corpus is a set of files: by default the ``.py`` files of the running interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``, without ``site-packages``/``dist-packages``): code and docstrings, text
in which position matters (indentation, brackets, quotes). ``data.corpus`` takes any other directory (every
file under it) or file glob (``~/books/**/*.txt``). Nothing is downloaded.

Split by file, deterministically, never by random order: file ``f`` with path ``p`` relative to the corpus
root gets ``h(f) = int(sha256(p)[:16 hex digits]) / 2^64`` in ``[0, 1)``; it is a validation file if
``h(f) < val_fraction``, else a training file. A file is in exactly one split, whatever the machine, and
adding a file never moves another. Within a split, files are read in increasing ``h`` and concatenated
until ``max_bytes`` (training) or ``val_bytes`` (validation) are reached, so setup reads only what it uses.

Every byte is a token (``vocab_size = 256``) and every position a target: a window ``s_1..s_{n+1}`` of the
byte stream gives the input ``s_1..s_n`` and targets ``s_2..s_{n+1}`` (next-byte prediction). Training
windows are the contiguous, non-overlapping windows of ``length`` bytes of the training stream (shuffled
into batches each epoch). Evaluation at each length ``n = round(f * length)`` for ``f`` in ``eval_factors``
cuts the *same* validation bytes into non-overlapping windows of ``n`` (the non-overlapping evaluation of
Press et al., "Train Short, Test Long", ICLR 2022, Sec. 4): every length scores (nearly) the same bytes,
only the context a byte is predicted from changes.

The corpus fingerprint (:meth:`TextBytes.provenance`: Python version, corpus, file counts, bytes and a
sha256 over the whole file list and the bytes read) goes into ``metrics.json`` and the HParams tab: the
standard library differs across Python versions, so runs compare only at equal fingerprints.
"""

from __future__ import annotations

import glob
import hashlib
import os
import platform
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from posenc_exp.data.lengths import LengthGeneralizationTask
from posenc_exp.errors import ConfigError
from posenc_exp.schemas.data import TextSpec

VOCAB_SIZE = TextSpec.vocab_size  # bytes
_GLOB_CHARS = set("*?[")
_NOT_STDLIB = ("site-packages", "dist-packages")


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(corpus: str | None) -> tuple[Path, list[Path]]:
    """``(root, files)``: the corpus root and its files, sorted. ``None``: the stdlib's ``.py`` files.

    A ``corpus`` with glob characters is expanded with ``glob(recursive=True)`` and its root is the
    directory before the first glob character; otherwise it is a directory (every file under it, hidden
    ones excepted) or one file. Raises ``ConfigError`` naming ``data.corpus`` if nothing matches.
    """
    corpus = None if corpus is None else str(corpus)
    if corpus is None:
        root = stdlib_dir()
        files = [p for p in _walk(root, _NOT_STDLIB) if p.suffix == ".py"]
    elif not corpus.strip():  # Path("") would be the working directory
        root, files = Path(), []
    elif _GLOB_CHARS & set(corpus):
        pattern = os.path.expanduser(corpus)
        prefix = pattern[: min(pattern.index(c) for c in _GLOB_CHARS if c in pattern)]
        root = Path(prefix if prefix.endswith(os.sep) else os.path.dirname(prefix) or ".")
        files = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
    else:
        path = Path(os.path.expanduser(corpus))
        if path.is_file():
            root, files = path.parent, [path]
        else:
            root = path
            files = _walk(path, ()) if path.is_dir() else []
    if not files:
        raise ConfigError(
            f"data.corpus={corpus} matches no file: expected a directory of text files or a file glob such as "
            "'~/texts/**/*.txt' (null: the Python standard library)"
        )
    return root, sorted(files)


def _walk(root: Path, excluded: Sequence[str]) -> list[Path]:
    """The regular files under ``root``, hidden ones and those under hidden or ``excluded`` directories
    skipped (without descending into them: the stdlib directory holds ``site-packages``)."""
    files = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d not in excluded]
        files += [Path(directory, name) for name in names if not name.startswith(".")]
    return [file for file in files if file.is_file()]


def path_hash(relative: str) -> float:
    """``h`` in ``[0, 1)``: the first 64 bits of ``sha256(relative path)``, divided by ``2^64``."""
    return int(hashlib.sha256(relative.encode()).hexdigest()[:16], 16) / 2**64


def split_files(root: Path, files: Sequence[Path], val_fraction: float) -> dict[str, list[Path]]:
    """``{"train": [...], "val": [...]}``: each file by its path hash (module docstring), in increasing hash."""
    hashed = sorted((path_hash(file.relative_to(root).as_posix()), file) for file in files)
    return {
        "train": [file for h, file in hashed if h >= val_fraction],
        "val": [file for h, file in hashed if h < val_fraction],
    }


def read_stream(files: Sequence[Path], max_bytes: int) -> tuple[bytes, list[Path]]:
    """The files concatenated, in order, cut at ``max_bytes``; and the files read."""
    parts, total, read = [], 0, []
    for file in files:
        if total >= max_bytes:
            break
        data = file.read_bytes()[: max_bytes - total]
        parts.append(data)
        read.append(file)
        total += len(data)
    return b"".join(parts), read


def windows(stream: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Non-overlapping next-byte windows: inputs ``stream[i n : (i+1) n]``, targets shifted by one; views."""
    return stream[:-1].unfold(0, n, n), stream[1:].unfold(0, n, n)


class TextBytes(LengthGeneralizationTask, TextSpec):
    """Byte-level language modelling on real text (see the module docstring); ``task = "lm"``.

    ``n_train`` and ``n_val`` are not arguments here: after setup they are the number of training windows
    and of validation windows at the training length that the corpus gave.
    """

    vocab_size = VOCAB_SIZE

    def __init__(
        self,
        corpus: str | None,
        val_fraction: float,
        max_bytes: int,
        val_bytes: int,
        vocab_size: int = VOCAB_SIZE,
        **task: Any,
    ) -> None:
        """``task``: the length-generalization arguments (length, eval_factors) and the common ones."""
        super().__init__(n_train=0, n_val=0, **task)
        self.corpus, self.val_fraction = corpus, val_fraction
        self.max_bytes, self.val_bytes = max_bytes, val_bytes
        self.fingerprint: dict[str, Any] = {}

    def provenance(self) -> dict[str, Any]:
        """``{"corpus": fingerprint}`` (module docstring), for ``metrics.json`` and the HParams tab."""
        return {"corpus": self.fingerprint}

    def generate(self, generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
        root, files = corpus_files(self.corpus)
        split = split_files(root, files, self.val_fraction)
        name = f"data.corpus={self.corpus}"
        for which, fix in (("val", "raise"), ("train", "lower")):
            if not split[which]:
                raise ConfigError(
                    f"{name}: none of its {len(files)} file(s) falls in the {which} split (split by path hash, "
                    f"data.val_fraction={self.val_fraction} of the files validate, the rest train): use a corpus "
                    f"of more files or {fix} data.val_fraction"
                )
        train, train_read = read_stream(split["train"], self.max_bytes)
        val, val_read = read_stream(split["val"], self.val_bytes)
        longest = max(self.eval_lengths)
        for which, stream, n, key in (("train", train, self.length, "length"), ("val", val, longest, "eval_factors")):
            if len(stream) < n + 1:
                raise ConfigError(
                    f"{name}: its {which} files hold {len(stream)} bytes, fewer than one window of {n} + 1 bytes "
                    f"(data.{key}; data.length={self.length}, data.eval_factors={self.eval_factors}): use a larger "
                    "corpus or a smaller data.length"
                )
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(train + b"\0" + val)
        self.fingerprint = {
            "python": platform.python_version(),
            "source": "python stdlib" if self.corpus is None else str(self.corpus),
            "files": len(files),
            "train_files": len(train_read),
            "val_files": len(val_read),
            "train_bytes": len(train),
            "val_bytes": len(val),
            "sha256": digest.hexdigest()[:16],
        }
        train_stream = torch.frombuffer(bytearray(train), dtype=torch.uint8).long()
        val_stream = torch.frombuffer(bytearray(val), dtype=torch.uint8).long()
        splits = {"train": windows(train_stream, self.length)}
        splits.update({f"val@{n}": windows(val_stream, n) for n in self.eval_lengths})
        splits["val"] = splits[f"val@{self.length}"]
        self.n_train, self.n_val = len(splits["train"][0]), len(splits["val"][0])
        return splits
