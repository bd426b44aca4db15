"""The model card: the contract a shipped model carries and the runtime enforces.

`card.json` beside the weights says what the model expects (rate, leads, window, hop, DSP,
classes, interval rule, thresholds) and which files it is made of (with SHA-256). The runtime
reads nothing about the model from anywhere else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from .dsp import DspConfig
from .intervals import IntervalRule
from .rhythm import PREMATURITY_REFERENCES, STREAM_CENTRES, STREAM_CONTEXT

CARD_FILE = "card.json"
DEFAULT_FILE = "DEFAULT"
# what a card's class_rules may set for one class: the settings its intervals are labelled under (ModelCard.for_class)
CLASS_RULE_KEYS = ("interval_rule", "prematurity_reference", "prematurity_context", "prematurity_centre")


class CardError(ValueError):
    """A model card that is missing, malformed, or disagrees with the files beside it."""


@dataclass(frozen=True)
class LeadContract:
    """Which input leads the model needs, and how a stream's lead names are matched to them.

    Each required lead has aliases tried in order (case-insensitive, spaces/dashes ignored); a lead
    already taken for an earlier slot is not taken again. When no alias matches and `fallback` is
    "first", the stream's first lead not yet taken is used (its first lead when every lead is
    taken: a one-lead stream fills every slot with it) and the result is flagged "lead_fallback";
    with "refuse" the stream is refused.
    """

    leads: tuple[str, ...]
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fallback: str = "first"

    def pick(self, names: tuple[str, ...] | list[str]) -> tuple[list[int], bool]:
        """Indices of the stream's leads that feed the model, and whether a fallback was used."""
        norm = [_norm(n) for n in names]
        chosen, used_fallback = [], False
        for lead in self.leads:
            free = [i for i in range(len(norm)) if i not in chosen]
            idx = next((i for a in (lead, *self.aliases.get(lead, ())) for i in free if norm[i] == _norm(a)), None)
            if idx is None:
                if self.fallback != "first" or not names:
                    raise CardError(f"stream leads {list(names)} have none of {[lead, *self.aliases.get(lead, ())]}")
                idx, used_fallback = (free[0] if free else 0), True
            chosen.append(idx)
        return chosen, used_fallback


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).upper() if ch.isalnum())


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    fs: float
    leads: LeadContract
    window: int
    hop: int
    classes: tuple[str, ...]
    abnormal: tuple[str, ...]  # classes that get intervals and alarms
    thresholds: dict[str, float]  # per abnormal class: probability that raises it
    dsp: DspConfig
    interval_rule: IntervalRule
    files: dict[str, str]  # file name -> sha256
    model_config: dict
    rhythm_fusion: dict[str, float] = field(default_factory=dict)  # class -> weight of rr prematurity on its logit (stream_ecg.fusion)
    # what the fusion and interval_rule.premature take a beat's RR against: the window's median RR (the rr_prev
    # channel as the network sees it), the window's mean RR (stream_ecg.rhythm.rereferenced), or "stream": the
    # prematurity_centre ("median" or "mean") of the stream's RRs over the last prematurity_context samples (per-stream
    # state, postprocess.stream_rr_reference)
    prematurity_reference: str = "median"
    prematurity_context: int = STREAM_CONTEXT  # samples; read only with prematurity_reference "stream"
    prematurity_centre: str = "median"  # read only with prematurity_reference "stream"
    # class -> {CLASS_RULE_KEYS: value}: that class's intervals are labelled under the card with these settings
    # (for_class; postprocess.label_windows), the other classes' under the card's own. The network runs once; the
    # fusion is re-applied to its raw outputs. Why: one class's best rule can cost another class, as bedside-v9.8's
    # S settings cost V (docs/results_notes.md).
    class_rules: dict[str, dict] = field(default_factory=dict)
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        try:
            leads = d["leads"]
            contract = LeadContract(
                leads=tuple(leads),
                aliases={k: tuple(v) for k, v in d.get("lead_aliases", {}).items()},
                fallback=d.get("lead_fallback", "first"),
            )
            card = cls(
                name=str(d["name"]),
                version=str(d["version"]),
                fs=float(d["fs"]),
                leads=contract,
                window=int(d["window"]),
                hop=int(d["hop"]),
                classes=tuple(d["classes"]),
                abnormal=tuple(d.get("abnormal", [c for c in d["classes"] if c not in ("N", "normal")])),
                thresholds={k: float(v) for k, v in d["thresholds"].items()},
                dsp=DspConfig.from_dict(d["dsp"]),
                interval_rule=IntervalRule.from_dict(d["interval_rule"]),
                files=dict(d["files"]),
                model_config=dict(d.get("model_config", {})),
                rhythm_fusion={k: float(v) for k, v in d.get("rhythm_fusion", {}).items()},
                prematurity_reference=str(d.get("prematurity_reference", "median")),
                prematurity_context=int(d.get("prematurity_context", STREAM_CONTEXT)),
                prematurity_centre=str(d.get("prematurity_centre", "median")),
                class_rules={str(k): dict(v) for k, v in d.get("class_rules", {}).items()},
                raw=d,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CardError(f"malformed model card: {type(exc).__name__}: {exc}") from exc
        card.validate()
        return card

    @property
    def stream_reference(self) -> tuple[int, str] | None:
        """(span in samples, centre) of the stream RR reference the card reads, or None: its prematurity_reference
        "stream" (fusion and premature rule alike), else interval_rule.premature_context (the premature rule alone)."""
        rule = self.interval_rule
        if self.prematurity_reference == "stream":
            return self.prematurity_context, self.prematurity_centre
        return (rule.premature_context, rule.premature_centre) if rule.premature_context > 0 and rule.premature > 0 else None

    def for_class(self, label: str) -> "ModelCard":
        """The card `label`'s intervals are labelled under: with its class_rules entry applied, else the card itself."""
        over = self.class_rules.get(label)
        if over is None:
            return self
        unknown = set(over) - set(CLASS_RULE_KEYS)
        if unknown:
            raise CardError(f"class_rules[{label!r}] sets {sorted(unknown)}; only {list(CLASS_RULE_KEYS)} may be set per class")
        try:
            fields = {k: (IntervalRule.from_dict(v) if k == "interval_rule" else v) for k, v in over.items()}
            return replace(self, **fields, class_rules={})
        except (TypeError, ValueError) as exc:
            raise CardError(f"class_rules[{label!r}]: {type(exc).__name__}: {exc}") from exc

    @property
    def channels(self) -> int:
        """Model input channels: the contract's leads, plus the rhythm and residual channels the DSP adds."""
        return self.dsp.channels(len(self.leads.leads))

    def validate(self) -> None:
        if self.dsp.fs != self.fs:
            raise CardError(f"card fs={self.fs} but dsp.fs={self.dsp.fs}")
        if not 0 < self.hop <= self.window:
            raise CardError(f"hop={self.hop} must be in 1..window={self.window}")
        missing = [c for c in self.abnormal if c not in self.classes or c not in self.thresholds]
        if missing:
            raise CardError(f"abnormal classes {missing} need an entry in classes and thresholds")
        wrong = [c for c in self.rhythm_fusion if c not in self.abnormal]
        if wrong or (self.rhythm_fusion and not self.dsp.rhythm):
            raise CardError(f"rhythm_fusion {self.rhythm_fusion} needs abnormal classes and dsp.rhythm (its rr_prev channel)")
        if self.prematurity_reference not in PREMATURITY_REFERENCES:
            raise CardError(f"prematurity_reference {self.prematurity_reference!r} must be one of {PREMATURITY_REFERENCES}")
        if self.prematurity_centre not in STREAM_CENTRES:
            raise CardError(f"prematurity_centre {self.prematurity_centre!r} must be one of {STREAM_CENTRES}")
        if self.prematurity_reference == "stream" and (self.prematurity_context < 1 or not self.dsp.rhythm
                                                         or self.interval_rule.premature_context > 0):
            raise CardError("prematurity_reference 'stream' needs prematurity_context >= 1, dsp.rhythm, and no "
                            "interval_rule.premature_context (one stream reference serves the fusion and the rule)")
        if self.interval_rule.premature > 0 and ("S" not in self.abnormal or not self.dsp.rhythm):
            raise CardError("interval_rule.premature needs an abnormal class S and dsp.rhythm (its rr_prev channel)")
        if self.interval_rule.regular > 0 and ("S" not in self.abnormal or not self.dsp.rhythm):
            raise CardError("interval_rule.regular needs an abnormal class S and dsp.rhythm (its rr_prev channel)")
        if self.interval_rule.min_p_consistency > 0 and "S" not in self.abnormal:
            raise CardError("interval_rule.min_p_consistency needs an abnormal class S")
        if self.interval_rule.regular_stream > 0 and "S" not in self.abnormal:
            raise CardError("interval_rule.regular_stream needs an abnormal class S")
        if self.interval_rule.distinct > 0 and ("V" not in self.abnormal or not self.dsp.beat_residual
                                                 or (self.interval_rule.distinct_early and not self.dsp.rhythm)):
            raise CardError("interval_rule.distinct needs an abnormal class V and dsp.beat_residual (its residual channel), "
                            "and distinct_early dsp.rhythm (its rr_prev channel)")
        if self.interval_rule.premature_pause > 0 and not self.interval_rule.premature > 0:
            raise CardError("interval_rule.premature_pause needs premature > 0 (it widens the premature rule)")
        if self.interval_rule.premature_usual > 0 and not (self.interval_rule.premature > 0 and self.dsp.beat_residual):
            raise CardError("interval_rule.premature_usual needs premature > 0 and dsp.beat_residual (its residual channel)")
        if self.interval_rule.shape_split and not (self.interval_rule.premature_all and self.interval_rule.premature_usual > 0
                                                   and {"S", "V"} <= set(self.abnormal)):
            raise CardError("interval_rule.shape_split needs premature_all, premature_usual > 0 and abnormal classes S and V")
        self._validate_class_rules()
        channels = self.channels
        if self.model_config and self.model_config.get("in_leads", channels) != channels:
            raise CardError(
                f"model_config.in_leads={self.model_config['in_leads']} but the card's leads and dsp (rhythm, beat_residual) "
                f"make {channels} input channels"
            )

    def _validate_class_rules(self) -> None:
        """Each class rule must make a valid card that needs no per-stream state but the card's own (the buffer keeps
        one stream's RR memories by the card's settings) and merges as the card does."""
        for label in self.class_rules:
            if label not in self.abnormal:
                raise CardError(f"class_rules names {label!r}, not one of the abnormal classes {list(self.abnormal)}")
            part = self.for_class(label)
            if part.stream_reference not in (None, self.stream_reference):
                raise CardError(f"class_rules[{label!r}] reads the stream RR reference {part.stream_reference}, the card "
                                f"{self.stream_reference}: one stream keeps one")
            if label in self.rhythm_fusion and (part.prematurity_reference, part.stream_reference) != (
                    self.prematurity_reference, self.stream_reference):
                raise CardError(f"class_rules[{label!r}] fuses {label}'s probability against another reference than the "
                                "card, so its intervals would follow alarms other than the published ones")
            own, theirs = self.interval_rule, part.interval_rule
            if theirs.regular_stream > 0 and (own.regular_stream <= 0 or own.regular_context != theirs.regular_context):
                raise CardError(f"class_rules[{label!r}] reads the stream's irregularity over {theirs.regular_context} "
                                "samples, which the card's own rule does not keep")
            if theirs.confirm != own.confirm:
                raise CardError(f"class_rules[{label!r}] confirms after {theirs.confirm} windows, the card after "
                                f"{own.confirm}: one merger serves every class")
            part.validate()


def load_card(model_dir: Path | str, verify_files: bool = True) -> ModelCard:
    """Read and validate `card.json`; with verify_files, every listed file must match its SHA-256."""
    model_dir = Path(model_dir)
    path = model_dir / CARD_FILE
    if not path.exists():
        raise CardError(f"no {CARD_FILE} in {model_dir}: is this a model folder from edge_models/?")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CardError(f"{path} is not valid JSON: {exc}") from exc
    card = ModelCard.from_dict(d)
    if verify_files:
        for name, digest in card.files.items():
            f = model_dir / name
            if not f.exists():
                raise CardError(f"card lists {name} but {f} does not exist")
            if sha256(f) != digest:
                raise CardError(f"{f} does not match the card's sha256 (re-export the model or fix the card)")
    return card


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model_dir(root: Path | str | None = None) -> Path:
    """The model `edge_models/DEFAULT` names (root defaults to the repository's edge_models/)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent / "edge_models"
    marker = root / DEFAULT_FILE
    if not marker.exists():
        raise CardError(f"{marker} is missing: pass --model edge_models/<name> explicitly")
    return root / marker.read_text().strip()
