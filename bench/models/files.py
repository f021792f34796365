"""Load a model the harness did not train: a file, or a factory and its weights.

``--model`` is one of:

* a ``torch.export`` program (``.pt2``, ``torch.export.save``): the current PyTorch format.
  It is unflattened (``torch.export.unflatten``) so that its submodules are called by name
  and a latent layer can be hooked;
* a TorchScript file (``torch.jit.save``), deprecated in this torch but still common;
* ``module.path:factory`` (or ``file.py:factory``): ``factory()`` returns the ``nn.Module``;
  ``--weights FILE`` then loads a state dict into it with ``torch.load(weights_only=True)``,
  which refuses arbitrary pickles (a checkpoint ``{"model": state_dict, ...}`` as the
  harness writes it is accepted too).

Every failure is one BenchError line. What was loaded is described for the run's
provenance: each file's sha256 and size.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bench.core.errors import BenchError


def file_info(path: Path) -> dict:
    """{"path", "sha256", "size_bytes"} of a file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "sha256": digest.hexdigest(), "size_bytes": path.stat().st_size}


def _readable(path: Path, flag: str) -> Path:
    if not path.exists():
        raise BenchError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise BenchError(f"{flag} {path}: not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise BenchError(f"{flag} {path}: cannot be read ({exc.strerror or exc})") from None
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _is_factory(spec: str) -> bool:
    """``a.b:f`` or ``file.py:f`` (a colon whose right side is an identifier), not an existing file."""
    if Path(spec).exists() or ":" not in spec:
        return False
    return spec.rsplit(":", 1)[1].isidentifier()


def _archive_kind(path: Path) -> str:
    """'export' (torch.export), 'torchscript' or 'other', from the zip archive's members."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "other"
    if any("/serialized_exported_program" in n or n.endswith("serialized_exported_program.json")
           or "/models/" in n and n.endswith(".json") for n in names):
        return "export"
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return "other"


def _skip_input_processing(program: nn.Module) -> None:
    """Call an unflattened torch.export program taking one tensor without its per-call input
    processing (pytree flattening and shape-constraint checks, ~60 µs a call; attacks call the
    model thousands of times). The first call of each input shape still takes the checked
    path, so a shape the program was not exported for is refused with torch's message."""
    from torch.utils import _pytree as pytree
    checked_forward = program.forward
    generated = type(program.graph_module).forward
    out_spec = program.module_call_graph[0].signature.out_spec
    checked: set[tuple] = set()

    def forward(x: torch.Tensor):
        key = (tuple(x.shape), x.dtype, x.device)
        if key not in checked:
            out = checked_forward(x)
            checked.add(key)
            return out
        return pytree.tree_unflatten(generated(program, x), out_spec)

    program.forward = forward   # an instance attribute: nn.Module.__call__ (and its hooks) use it


def load_model_file(path: Path) -> tuple[nn.Module, dict]:
    """(module, provenance) of a torch.export program or a TorchScript file."""
    path = _readable(Path(path), "--model")
    kind = _archive_kind(path)
    if kind == "export" or (kind == "other" and path.suffix == ".pt2"):
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # a damaged or foreign archive: say which and why, in one line
            raise BenchError(f"--model {path}: not a loadable torch.export program ({_first_line(exc)})") from None
        module = torch.export.unflatten(program)
        for sub in module.modules():
            # run each submodule's generated Python code, not torch.fx.Interpreter node by node
            # (what unflatten does by default: ~4x slower per forward on the digits MLP); the
            # submodules are still called by name, so a latent layer's forward hook still fires
            if hasattr(sub, "_run_with_interpreter"):
                sub._run_with_interpreter = False
        _skip_input_processing(module)
        return module, {"format": "torch.export", **file_info(path)}
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():   # its deprecation notice: the user chose the format, the docstring says so
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise BenchError(f"--model {path}: not a loadable TorchScript file ({_first_line(exc)})") from None
        return module, {"format": "torchscript", **file_info(path)}
    raise BenchError(f"--model {path}: neither a torch.export program (.pt2, torch.export.save) nor a TorchScript "
                     f"file (torch.jit.save); for a state dict use --model module.path:factory --weights {path}")


def _import_factory(spec: str):
    module_name, attr = spec.rsplit(":", 1)
    try:
        if module_name.endswith(".py"):
            file = _readable(Path(module_name), "--model")
            name = f"_bench_model_{file.stem}"
            loader = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except BenchError:
        raise
    except ImportError as exc:
        raise BenchError(f"--model {spec}: cannot import {module_name!r} ({_first_line(exc)})") from None
    except Exception as exc:  # the user's module raised while importing
        raise BenchError(f"--model {spec}: importing {module_name!r} failed ({_first_line(exc)})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        known = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise BenchError(f"--model {spec}: {module_name!r} has no callable {attr!r} "
                         f"(it has: {', '.join(known) or 'none'})")
    return factory


def load_weights(path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict from ``path`` (torch.load with weights_only=True), or a harness checkpoint's."""
    path = _readable(Path(path), "--weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses arbitrary pickles; a broken file fails too
        raise BenchError(f"--weights {path}: refused by torch.load(weights_only=True): a state dict of tensors "
                         f"is needed ({_first_line(exc)})") from None
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]   # a checkpoint as the harness writes it
    elif isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"--weights {path}: not a state dict (a mapping of names to tensors)")
    return state


def load_model(spec: str, weights: str | Path | None = None) -> tuple[nn.Module, dict]:
    """(module on the CPU, provenance) of ``--model spec [--weights FILE]``."""
    if _is_factory(spec):
        factory = _import_factory(spec)
        try:
            model = factory()
        except Exception as exc:  # the user's factory raised
            raise BenchError(f"--model {spec}: the factory raised {_first_line(exc)}") from None
        if not isinstance(model, nn.Module):
            raise BenchError(f"--model {spec}: the factory returned a {type(model).__name__}, not an nn.Module")
        info: dict = {"format": "factory", "factory": spec}
        if weights is not None:
            state = load_weights(Path(weights))
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise BenchError(f"--weights {weights}: does not fit {spec}'s model ({_first_line(exc)})") from None
            info["weights"] = file_info(Path(weights))
        return model, info
    if weights is not None:
        raise BenchError("--weights goes with --model module.path:factory (a model file carries its own weights)")
    return load_model_file(Path(spec))
