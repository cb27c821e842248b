"""Shadow rules: policy elements judged on live traffic without being enforced.

Any element of a policy list that has a ``shadow`` field (breaker rules, bands of every
detector, and any later list of rule models that adds the field) can be marked
``shadow: true``. :func:`split_shadow` turns one resolved policy into

* the *enforced* policy: every shadow element removed, which is what the detectors and the
  breaker that publish controls run on, so a shadow element never changes a control;
* one *variant* per shadow element: the enforced policy plus that one element, enforced. The
  monitor keeps a separate state machine per variant (see ``AgentMonitor``), and what the
  variant does that the enforced machine does not is recorded as the shadow rule's would-be
  detections and transitions.

Promoting a shadow element is deleting its ``shadow: true``: the variant's policy becomes the
enforced one. Each shadow element is judged alone, against the enforced policy; two shadow
elements are never combined.

Names: a breaker rule (or any element with a ``name``) is named by its name; a band by where
it sits and its threshold, e.g. ``denial_rate.bands[0.25]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # breaker.py imports policy.py, whose validator imports this module
    from tripwire.detectors.breaker import Transition
    from tripwire.detectors.detection import Detection
    from tripwire.detectors.policy import ResolvedPolicy


@dataclass(frozen=True, slots=True)
class ShadowElement:
    name: str
    section: str
    field: str
    index: int


def shadow_elements(policy: ResolvedPolicy) -> list[ShadowElement]:
    """Every element marked ``shadow: true``, in policy order."""
    found: list[ShadowElement] = []
    for section in type(policy).model_fields:
        model = getattr(policy, section)
        for field in type(model).model_fields:
            value = getattr(model, field)
            if not isinstance(value, tuple):
                continue
            for index, item in enumerate(value):
                if getattr(item, "shadow", False):
                    found.append(ShadowElement(_name(section, field, item), section, field, index))
    return found


def _name(section: str, field: str, item: Any) -> str:
    name = getattr(item, "name", None)
    if isinstance(name, str) and name:
        return name
    at = getattr(item, "at", None)
    return f"{section}.{field}[{at:g}]" if isinstance(at, int | float) else f"{section}.{field}"


def split_shadow(policy: ResolvedPolicy) -> tuple[ResolvedPolicy, dict[str, ResolvedPolicy]]:
    """(enforced policy, {shadow name: variant policy}); ``policy`` itself and ``{}`` when
    nothing is marked shadow. ValueError naming the element if a split is not a valid policy
    (e.g. every band of a list marked shadow leaves the enforced list empty)."""
    elements = shadow_elements(policy)
    if not elements:
        return policy, {}
    cls = type(policy)
    names = [e.name for e in elements]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"shadow elements need distinct names, repeated: {', '.join(dupes)}")
    data = policy.model_dump()

    def build(keep: ShadowElement | None, what: str) -> ResolvedPolicy:
        merged = {section: dict(values) for section, values in data.items()}
        touched = {(e.section, e.field) for e in elements}
        for section, field in touched:
            items = []
            for index, item in enumerate(data[section][field]):
                if not item.get("shadow"):
                    items.append(item)
                elif keep is not None and (keep.section, keep.field, keep.index) == (
                    section, field, index
                ):
                    items.append({**item, "shadow": False})
            merged[section][field] = items
        try:
            return cls.model_validate(merged)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None

    enforced = build(None, "the policy without its shadow elements")
    variants = {e.name: build(e, f"shadow {e.name} enforced") for e in elements}
    return enforced, variants


def enforced_policy(policy: ResolvedPolicy) -> ResolvedPolicy:
    """The policy the detectors and breaker enforce (shadow elements removed); cached per
    policy object, and ``policy`` itself when nothing is shadow."""
    enforced = policy.compiled("shadow_split", _split)[0]
    return policy if enforced is None else enforced


def shadow_variants(policy: ResolvedPolicy) -> dict[str, ResolvedPolicy]:
    return policy.compiled("shadow_split", _split)[1]


def _split(policy: ResolvedPolicy) -> tuple[ResolvedPolicy | None, dict[str, ResolvedPolicy]]:
    # None for "the policy itself": the cache lives as long as the policy and must not hold
    # a strong reference to it, or neither would ever be freed.
    enforced, variants = split_shadow(policy)
    return (None if enforced is policy else enforced), variants


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """A would-be detection or transition of one shadow element (never published)."""

    shadow_rule: str
    detection: Detection | None = None
    transition: Transition | None = None


def _transition_key(t: Transition) -> tuple:
    return (t.ts, t.action, t.prev_mode, t.new_mode, t.rule, t.scope, t.run_id)


def shadow_records(
    variant_output: list[tuple[str, list[Detection], list[Transition]]],
    enforced_detections: list[Detection],
    enforced_transitions: list[Transition],
) -> list[ShadowRecord]:
    """What each variant did that the enforced machine did not do in the same call: its
    detections with ids the enforced detectors did not emit, and its transitions not made
    identically (same time, action, modes, rule, run) by the enforced breaker."""
    if not variant_output:
        return []
    ids = {d.detection_id for d in enforced_detections}
    keys = {_transition_key(t) for t in enforced_transitions}
    out: list[ShadowRecord] = []
    for name, detections, transitions in variant_output:
        out += [ShadowRecord(name, detection=d) for d in detections if d.detection_id not in ids]
        out += [ShadowRecord(name, transition=t) for t in transitions
                if _transition_key(t) not in keys]
    return out
