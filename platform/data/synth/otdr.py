"""Synthetic OTDR traces drawn from the physics of a backscatter measurement, with exact labels.

The instrument launches a rectangular pulse of `pulse_width_ns`; one sample is `resolution_m` of
fibre. What comes back (two-way power, shown as one-way dB = 5·log10) is

* Rayleigh backscatter: a level set by the backscatter coefficient of the pulse, falling
  linearly in dB with the fibre attenuation (≈0.35 dB/km at 1310 nm, ≈0.2 at 1550 nm) and by
  each event's loss; the rectangular pulse turns every step into a ramp one pulse long;
* Fresnel reflections: a flat-topped pulse 10^((R - B)/10) above the local backscatter (R the
  reflectance, B the pulse's backscatter coefficient), followed by the receiver's exponential
  recovery tail; the front-panel reflection saturates the receiver (clipped at 0 dB), which
  makes the launch dead zone;
* noise: additive in linear power, so in dB it grows with distance until the trace sinks into
  the noise floor `snr_db` below the launch level; nothing but noise after the fibre's end;
* the receiver's ceiling (`saturation_db`): strong reflections are clipped flat;
* a ghost, sometimes: the strongest reflection bounced off the front panel and back, a weaker
  copy at twice its distance, with no loss (not an event: nothing is there).

Acquisitions span what real instruments record: 8k-64k samples of 0.05-5 m, pulses of 3 ns to
20 us, 1310/1550/1625 nm, launch and receive reels (a spool of fibre before and after the fibre
under test, joined by a connector: a face_plate at the reel's end), and "gainer" splices (a
pass_through whose step goes up, as a splice between unlike fibres reads from one side).

The receiver's band limit is a causal low-pass, so nothing moves before an event's start.
Event types: face_plate (connector: reflection + loss), pass_through (splice: step loss),
fiber_cut (the fibre ends, weak or no reflection), fiber_end (the far end's Fresnel reflection).
Each label spans [start, end) from the event's position to where its ramp, reflection and tail
have settled (within 0.5 dB of the backscatter, or within the noise after the fibre's end).

Every trace is drawn from its own random stream seeded by (seed, split, index): re-runs give
the same bytes and one split's size never changes another split's traces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sightline.data.otdr import SPEED_OF_LIGHT_M_PER_S, Event, Trace, save_split
from sightline.data.synth.params import SynthOTDR

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = "2"

# An event lasts until the trace is back within 0.5 dB of the backscatter (the usual definition
# of an OTDR's attenuation dead zone).
VISIBLE_EXCESS = 10 ** (0.5 / 5) - 1
NOISE_SETTLED = 0.5  # after the fibre's end, a tail below half the noise std is lost in noise
TAIL_SPAN_TAUS = 10  # the recovery kernel is cut after this many time constants
PLACEMENT_TRIES = 30


@dataclass(frozen=True)
class Acquisition:
    """The instrument settings and fibre constants one trace is drawn with."""

    num_samples: int
    resolution_m: float
    group_index: float
    wavelength_nm: int
    attenuation_db_per_km: float
    pulse_width_ns: float
    pulse_samples: float
    backscatter_db: float  # of this pulse width
    launch_level_db: float
    speckle_db: float
    tail_fraction: float  # the recovery tail's start, as a fraction of the reflection
    tail_tau: float  # samples
    rc_tau: float  # samples
    saturation_db: float  # the receiver's ceiling

    def reflection_excess(self, reflectance_db: float | None) -> float:
        """Reflected power over the local backscatter power (linear); 0 if not reflective."""
        if reflectance_db is None:
            return 0.0
        return 10 ** ((reflectance_db - self.backscatter_db) / 10)

    def event_width(
        self, reflectance_db: float | None, settled_below: float, step: float = 1.0
    ) -> int:
        """Samples from an event's start until its ramp, reflection and tail have settled.

        `step` is the change in backscatter power the event makes and `settled_below` the excess
        still counted as the event, both relative to the backscatter power before it.
        """
        excess = self.reflection_excess(reflectance_db)
        tail = _decay_time(self.tail_tau, self.tail_fraction * excess, settled_below)
        band_limit = _decay_time(self.rc_tau, step + excess, settled_below)
        return max(2, math.ceil(self.pulse_samples + tail + band_limit))

    def width_of(self, loss_db: float, reflectance_db: float | None) -> int:
        """A face_plate's or pass_through's extent (a gainer's step counts as its size)."""
        step = abs(1 - 10 ** (-loss_db / 5))
        return self.event_width(reflectance_db, VISIBLE_EXCESS, step)

    def loss_to(self, sample: int, event_losses_db: float) -> float:
        """One-way loss (dB) from the first sample to `sample`: fibre plus events before it."""
        return self.attenuation_db_per_km * sample * self.resolution_m / 1000 + event_losses_db

    def fibre_level(self, sample: int, event_losses_db: float) -> float:
        """Backscatter power (displayed scale, linear) at `sample`."""
        return 10 ** ((self.launch_level_db - self.loss_to(sample, event_losses_db)) / 5)


@dataclass(frozen=True)
class PlannedEvent:
    type: str
    start: int
    width: int
    loss_db: float | None
    reflectance_db: float | None

    @property
    def end(self) -> int:
        return self.start + self.width


def generate(out_root: Path, cfg: SynthOTDR) -> dict[str, int]:
    """Write train/val/test as `<split>.npz` + `<split>.json` under `out_root`; counts per split."""
    counts = {split: getattr(cfg, split) for split in SPLITS}
    for split_index, (split, count) in enumerate(counts.items()):
        traces = [
            simulate_trace(
                np.random.default_rng([cfg.seed, split_index, index]),
                cfg,
                trace_id=f"{split}_{index:05d}",
            )
            for index in range(count)
        ]
        save_split(traces, Path(out_root), split)
    return counts


def simulate_trace(rng: np.random.Generator, cfg: SynthOTDR, trace_id: str = "") -> Trace:
    """One labelled trace drawn from `cfg`'s ranges with `rng`."""
    acq = _acquisition(rng, cfg)
    front_reflectance = _uniform(rng, cfg.front_panel_reflectance_db)
    dead_zone_end = acq.event_width(front_reflectance, VISIBLE_EXCESS) + math.ceil(
        acq.pulse_samples
    )
    end_kind, end_start, end_reflectance = _draw_fibre_end(rng, cfg, acq)
    reels = _reel_connectors(rng, cfg, acq, dead_zone_end, end_start)
    events = _place_events(rng, cfg, acq, dead_zone_end, end_start, reels)
    losses_db = sum(e.loss_db or 0.0 for e in events)
    # The drawn SNR, raised where needed so the fibre's end stays above the noise floor.
    snr_db = max(
        _uniform(rng, cfg.snr_db), acq.loss_to(end_start, losses_db) + cfg.min_end_margin_db
    )
    noise_std = 10 ** ((acq.launch_level_db - snr_db) / 5)
    # After the fibre's end, the event lasts until it has sunk into the noise.
    settled = NOISE_SETTLED * noise_std / acq.fibre_level(end_start, losses_db)
    width = min(acq.event_width(end_reflectance, settled), acq.num_samples - end_start)
    events.append(PlannedEvent(end_kind, end_start, width, None, end_reflectance))
    ghost_db = _uniform(rng, cfg.ghost_level_db) if rng.random() < cfg.ghost_probability else None
    samples = _render(rng, acq, events, front_reflectance, noise_std, ghost_db)
    return Trace(
        samples=samples,
        resolution_m=acq.resolution_m,
        wavelength_nm=float(acq.wavelength_nm),
        pulse_width_ns=acq.pulse_width_ns,
        group_index=acq.group_index,
        trace_id=trace_id,
        events=[
            Event(
                e.type, float(e.start), float(e.end), acq.resolution_m, e.loss_db, e.reflectance_db
            )
            for e in events
        ],
    )


def _decay_time(tau: float, start: float, settled_below: float) -> float:
    """Time for `start * exp(-t / tau)` to fall below `settled_below`."""
    return tau * math.log(start / settled_below) if start > settled_below > 0 else 0.0


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _acquisition(rng: np.random.Generator, cfg: SynthOTDR) -> Acquisition:
    num_samples = int(rng.integers(cfg.num_samples[0], cfg.num_samples[1] + 1))
    low, high = np.log(cfg.resolution_m[0]), np.log(cfg.resolution_m[1])
    resolution_m = float(np.exp(rng.uniform(low, high)))
    group_index = _uniform(rng, cfg.group_index)
    metres_per_ns = 1e-9 * SPEED_OF_LIGHT_M_PER_S / (2 * group_index)
    pulse_width_ns = _pick_pulse(rng, cfg, metres_per_ns / resolution_m)
    pulse_samples = pulse_width_ns * metres_per_ns / resolution_m
    wavelength = int(rng.choice(cfg.wavelengths_nm))
    return Acquisition(
        num_samples=num_samples,
        resolution_m=round(resolution_m, 6),
        group_index=round(group_index, 5),
        wavelength_nm=wavelength,
        attenuation_db_per_km=_uniform(rng, cfg.attenuation_db_per_km[wavelength]),
        pulse_width_ns=pulse_width_ns,
        pulse_samples=pulse_samples,
        backscatter_db=_uniform(rng, cfg.backscatter_coefficient_db)
        + 10 * math.log10(pulse_width_ns),
        launch_level_db=_uniform(rng, cfg.launch_level_db),
        speckle_db=cfg.speckle_db,
        tail_fraction=cfg.receiver_tail_fraction,
        tail_tau=pulse_samples * _uniform(rng, cfg.receiver_tail_pulses),
        rc_tau=pulse_samples * cfg.receiver_rc_pulses,
        saturation_db=_uniform(rng, cfg.saturation_db),
    )


def _pick_pulse(rng: np.random.Generator, cfg: SynthOTDR, samples_per_ns: float) -> float:
    """A pulse width covering `cfg.pulse_samples` samples, else the one nearest that range."""
    low, high = cfg.pulse_samples
    fitting = [w for w in cfg.pulse_widths_ns if low <= w * samples_per_ns <= high]
    if fitting:
        return float(rng.choice(fitting))
    centre = math.sqrt(low * high)
    return float(min(cfg.pulse_widths_ns, key=lambda w: abs(math.log(w * samples_per_ns / centre))))


def _draw_fibre_end(
    rng: np.random.Generator, cfg: SynthOTDR, acq: Acquisition
) -> tuple[str, int, float | None]:
    """Where and how the fibre ends: fiber_cut (weak or no reflection) or fiber_end."""
    start = int(acq.num_samples * _uniform(rng, cfg.fibre_end_fraction))
    if rng.random() < cfg.fiber_cut_probability:
        reflective = rng.random() < cfg.fiber_cut_reflective_probability
        reflectance = round(_uniform(rng, cfg.fiber_cut_reflectance_db), 3) if reflective else None
        return "fiber_cut", start, reflectance
    return "fiber_end", start, round(_uniform(rng, cfg.fiber_end_reflectance_db), 3)


def _fits(
    start: int, width: int, gap: int, first_free: int, fibre_end: int, placed: list[PlannedEvent]
) -> bool:
    """Whether an event at `start` lies between the dead zone and the end, `gap` from others."""
    return (
        start >= first_free
        and start + width + gap <= fibre_end
        and all(start + width + gap <= e.start or e.end + gap <= start for e in placed)
    )


def _reel_connectors(
    rng: np.random.Generator, cfg: SynthOTDR, acq: Acquisition, first_free: int, fibre_end: int
) -> list[PlannedEvent]:
    """The connectors of a launch reel (a reel length after the instrument) and of a receive
    reel (a reel length before the fibre's end), where the trace has room for them."""
    gap = max(2, math.ceil(acq.pulse_samples))
    placed: list[PlannedEvent] = []
    for probability, at_start in (
        (cfg.launch_reel_probability, True),
        (cfg.receive_reel_probability, False),
    ):
        used = rng.random() < probability
        reel = round(_uniform(rng, cfg.reel_length_m) / acq.resolution_m)
        loss = round(_uniform(rng, cfg.face_plate_loss_db), 3)
        reflectance = round(_uniform(rng, cfg.face_plate_reflectance_db), 3)
        width = acq.width_of(loss, reflectance)
        start = reel if at_start else fibre_end - reel - width
        if used and _fits(start, width, gap, first_free, fibre_end, placed):
            placed.append(PlannedEvent("face_plate", start, width, loss, reflectance))
    return placed


def _place_events(
    rng: np.random.Generator,
    cfg: SynthOTDR,
    acq: Acquisition,
    first_free: int,
    fibre_end: int,
    fixed: list[PlannedEvent],
) -> list[PlannedEvent]:
    """Non-overlapping face_plate / pass_through events between the dead zone and the end,
    clear of the `fixed` ones (the reels' connectors), which are kept."""
    gap = max(2, math.ceil(acq.pulse_samples))
    count = int(rng.integers(cfg.events_per_trace[0], cfg.events_per_trace[1] + 1))
    placed = sorted(fixed, key=lambda e: e.start)
    for _ in range(count):
        kind, loss, reflectance = _draw_event(rng, cfg)
        width = acq.width_of(loss, reflectance)
        for _ in range(PLACEMENT_TRIES):
            if placed and rng.random() < cfg.cluster_probability:
                start = placed[-1].end + int(rng.integers(*cfg.cluster_gap_samples, endpoint=True))
            else:
                start = int(rng.integers(first_free, max(first_free + 1, fibre_end)))
            if _fits(start, width, gap, first_free, fibre_end, placed):
                placed.append(PlannedEvent(kind, start, width, loss, reflectance))
                break
    return sorted(placed, key=lambda e: e.start)


def _draw_event(rng: np.random.Generator, cfg: SynthOTDR) -> tuple[str, float, float | None]:
    if rng.random() < cfg.face_plate_probability:
        loss = _uniform(rng, cfg.face_plate_loss_db)
        reflectance = round(_uniform(rng, cfg.face_plate_reflectance_db), 3)
        return "face_plate", round(loss, 3), reflectance
    if rng.random() < cfg.gainer_probability:
        return "pass_through", -round(_uniform(rng, cfg.gainer_gain_db), 3), None
    return "pass_through", round(_uniform(rng, cfg.pass_through_loss_db), 3), None


def _render(
    rng: np.random.Generator,
    acq: Acquisition,
    events: list[PlannedEvent],
    front_reflectance_db: float,
    noise_std: float,
    ghost_db: float | None = None,
) -> np.ndarray:
    """Samples in dB: backscatter + reflections through the receiver, noise, saturation; with
    `ghost_db`, the strongest event reflection again at twice its distance, that much weaker."""
    n = acq.num_samples
    one_way_db = np.arange(n) * (acq.attenuation_db_per_km * acq.resolution_m / 1000)
    steps = np.zeros(n)
    for event in events[:-1]:
        steps[event.start] += event.loss_db or 0.0
    one_way_db += np.cumsum(steps)
    attenuation = 10 ** (-one_way_db / 5)  # two-way, linear
    scatterers = attenuation.copy()
    scatterers[events[-1].start :] = 0.0  # no fibre after its end
    reflections = np.zeros(n)
    reflections[0] = acq.reflection_excess(front_reflectance_db)
    for event in events:
        if event.reflectance_db is not None:
            # Reflected before the event's own loss: the loss applies to what lies beyond it.
            before = attenuation[event.start] * 10 ** ((steps[event.start]) / 5)
            reflections[event.start] += acq.reflection_excess(event.reflectance_db) * before
    source = int(np.argmax(reflections[1:])) + 1  # the front panel's own ghost sits at 0
    if ghost_db is not None and reflections[source] > 0 and 2 * source < n:
        reflections[2 * source] += reflections[source] * 10 ** (ghost_db / 10)
    pulse = _pulse_kernel(acq.pulse_samples)
    # Fading ripple: white in the fibre, smoothed by the pulse like the backscatter itself.
    ripple = _convolve(rng.standard_normal(n), pulse / np.sqrt(np.sum(pulse**2)))
    power = _convolve(scatterers, pulse / acq.pulse_samples) * 10 ** (acq.speckle_db * ripple / 5)
    power += _convolve(reflections, _reflection_kernel(acq))
    power = _convolve(power, _rc_kernel(acq.rc_tau))
    power *= 10 ** (acq.launch_level_db / 5)
    received = np.abs(power + noise_std * rng.standard_normal(n))
    db = 5 * np.log10(np.maximum(received, 0.05 * noise_std))
    return np.minimum(db, acq.saturation_db).astype(np.float32)  # the receiver saturates


def _convolve(signal: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Causal convolution: output[i] depends on signal[: i + 1] only."""
    return np.convolve(signal, kernel)[: len(signal)]


def _pulse_kernel(pulse_samples: float) -> np.ndarray:
    """A rectangle `pulse_samples` long (the last tap takes the fractional part)."""
    whole = int(pulse_samples)
    fraction = pulse_samples - whole
    return np.concatenate([np.ones(whole), [fraction] if fraction > 1e-9 else []])


def _reflection_kernel(acq: Acquisition) -> np.ndarray:
    """A reflection's shape: the flat-topped pulse, then the receiver's recovery tail."""
    t = np.arange(math.ceil(TAIL_SPAN_TAUS * acq.tail_tau))
    tail = acq.tail_fraction * np.exp(-t / acq.tail_tau)
    return np.concatenate([_pulse_kernel(acq.pulse_samples), tail])


def _rc_kernel(tau: float) -> np.ndarray:
    if tau < 0.05:
        return np.ones(1)
    kernel = np.exp(-np.arange(math.ceil(6 * tau) + 1) / tau)
    return kernel / kernel.sum()
