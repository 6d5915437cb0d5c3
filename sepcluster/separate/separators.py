"""What separates: a model of any kind the user gives, or an oracle, resolved once on the driver.

``--model PATH`` may be a sepcluster bundle folder, a folder of official Open-Unmix ``.pth`` files
or one such file, a demucs ``.th`` / ``.safetensors`` model or bag-of-models YAML, or a BS-RoFormer /
Mel-Band RoFormer checkpoint with its Music-Source-Separation-Training YAML
(:func:`sepcluster.models.foreign.detect_model` tells them apart from the files; ``model_type``
skips the guessing). :func:`resolve` checks the files and loads the model once on the CPU (so a
bad checkpoint fails before any track is touched) and returns a :class:`SeparatorSpec`: the
plain, picklable description the Ray workers load the model from again (:func:`load`), plus what
the run produces (outputs, sample rate) and what the catalog records (model kind, weights hash,
``bundle_id``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Optional

from sepcluster import storage
from sepcluster.errors import ConfigError

from .estimator_base import RESIDUAL_NAME

log = logging.getLogger(__name__)
ORACLE_KIND = "oracle"
WAVEFORM_KINDS = ("demucs", "bs_roformer", "mel_band_roformer")  # run by a waveform estimator (autocast)


@dataclass(frozen=True)
class SeparatorSpec:
    """A resolved separator. ``kind``: ``bundle``, ``umx``, ``demucs``, ``bs_roformer``,
    ``mel_band_roformer`` or ``oracle``; ``path``/``config``: the model files (``oracle``: its
    name, e.g. ``irm``); ``sources``: every output the model can give, in its order;
    ``sample_rate``: the rate the model works at (None: the input's own, oracles);
    ``weights_sha256``: SHA-256 of the weights file (of the list of files' digests for several);
    ``bundle_id``: what the catalog records as the separator (also the resume key's model part)."""

    kind: str
    path: str
    config: Optional[str] = None
    sources: tuple = ()
    sample_rate: Optional[int] = None
    weights_sha256: Optional[str] = None
    bundle_id: str = ""
    files: tuple = field(default=(), compare=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SeparatorSpec":
        data = dict(data)
        for key in ("sources", "files"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data)

    def outputs(self, targets: Optional[list], residual: bool) -> list:
        """The output names of a run: ``targets`` (default every source) plus the residual."""
        chosen = list(targets) if targets else list(self.sources)
        unknown = [t for t in chosen if t not in self.sources]
        if unknown:
            raise ConfigError("targets", f"'{unknown[0]}' is not an output of {self.describe()} "
                                         f"(it has {', '.join(self.sources)})")
        if residual and RESIDUAL_NAME in chosen:
            raise ConfigError("residual", f"{self.describe()} has an output named '{RESIDUAL_NAME}' already")
        return chosen + ([RESIDUAL_NAME] if residual else [])

    def check_precision(self, precision: str, device) -> None:
        """ConfigError naming ``precision`` where ``device`` cannot run it (fp16 on the CPU:
        :func:`~sepcluster.separate.waveform_estimators.check_precision`); a warning where this separator
        ignores it (spectrogram models and oracles run fp32)."""
        from .waveform_estimators import check_precision

        check_precision(precision, device)
        if precision != "fp32" and self.kind not in WAVEFORM_KINDS:
            log.warning("--precision %s applies to waveform models (%s); %s runs in fp32", precision,
                        ", ".join(WAVEFORM_KINDS), self.kind)

    def describe(self) -> str:
        if self.kind == ORACLE_KIND:
            return f"the {self.path} oracle"
        return f"the {self.kind} model {storage.redact(self.path)}"


def weights_sha256(files: list) -> str:
    """SHA-256 of one weights file; for several, of the lines ``<name> <sha256>`` (sorted by name)."""
    digests = {}
    for uri in files:
        h = hashlib.sha256()
        with storage.local_copy(uri) as path, open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digests[storage.basename(uri)] = h.hexdigest()
    if len(digests) == 1:
        return next(iter(digests.values()))
    text = "".join(f"{name} {digest}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def absolute(model: Optional[str]) -> Optional[str]:
    """``model`` with a local path made absolute (``s3://`` and ``models:/`` URIs unchanged)."""
    return model if model is None or str(model).startswith("models:/") else storage.absolute(model)


def resolve(model: Optional[str], oracle: Optional[str] = None, model_type: Optional[str] = None,
            model_config: Optional[str] = None, targets: Optional[list] = None) -> SeparatorSpec:
    """Check and describe what separates (loading a model once on the CPU); ConfigError/DataError
    name the file and the problem before any work starts."""
    if bool(model) == bool(oracle):
        raise ConfigError("model", "give exactly one of --model PATH or --oracle irm")
    if oracle:
        from .oracle import IdealRatioMask

        est = IdealRatioMask.from_name(oracle).estimator(targets=None)
        return SeparatorSpec(kind=ORACLE_KIND, path=str(oracle).lower(), sources=tuple(est.outputs),
                             bundle_id=est.bundle_id)
    from sepcluster.models.foreign import detect_model

    if str(model).startswith("models:/"):  # a registered MLflow model: its separator files, fetched here
        from sepcluster import tracking

        model = tracking.resolve_model_uri(str(model))
    found = detect_model(model, model_type=model_type, config=model_config)
    loaded = _load(found.kind, found.path, found.config, targets, "cpu")
    return _describe(found.kind, found.path, found.config, loaded)


def _describe(kind: str, path: str, config: Optional[str], loaded) -> SeparatorSpec:
    if kind in ("bundle", "umx"):
        files = [storage.join(path, w["file"]) if storage.isdir(path) else path for w in loaded.meta.weights.values()]
        return SeparatorSpec(kind=kind, path=path, sources=tuple(loaded.targets),
                             sample_rate=int(round(float(loaded.meta.sample_rate))),
                             weights_sha256=weights_sha256(files), bundle_id=loaded.bundle_id, files=tuple(files))
    files = list(getattr(loaded, "files", None) or [getattr(loaded, "checkpoint", path)])
    digest = weights_sha256(files)
    sources = tuple(loaded.sources if kind == "demucs" else loaded.instruments)
    rate = int(loaded.samplerate if kind == "demucs" else loaded.sample_rate)
    return SeparatorSpec(kind=kind, path=path, config=config, sources=sources, sample_rate=rate,
                         weights_sha256=digest, bundle_id=f"{kind}:{digest[:16]}", files=tuple(files))


def _load(kind: str, path: str, config: Optional[str], targets: Optional[list], device):
    if kind in ("bundle", "umx"):
        from sepcluster.models import load_bundle

        return load_bundle(path, targets=targets, device=device)
    if kind == "demucs":
        from sepcluster.models.demucs import load_demucs

        return load_demucs(path)
    from sepcluster.models.roformer import load_roformer

    return load_roformer(path, config=config, model_type=kind)


def load(spec: SeparatorSpec, targets: Optional[list] = None, device="cpu"):
    """The model (or oracle) of ``spec``, as :func:`sepcluster.separate.estimators.make_estimator` takes it."""
    if spec.kind == ORACLE_KIND:
        from .oracle import IdealRatioMask

        return IdealRatioMask.from_name(spec.path)
    return _load(spec.kind, spec.path, spec.config, targets if spec.kind in ("bundle", "umx") else None, device)
