"""params.yaml `synth.*`: the knobs of the synthetic dataset generators, as pydantic models.

Kept apart from the generators (which pull in OpenCV and NumPy) so the settings can be read by
light processes such as the HTTP ingress.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

MIN_IDENTITY_IMAGE_SIZE = 32


class SynthDetection(BaseModel):
    """Size and seed of the synthetic detection dataset (params.yaml `synth.detection`)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    image_size: int = 128
    train: int = 600
    val: int = 100
    test: int = 100


class SynthOTDR(BaseModel):
    """Ranges the simulator draws from; `(low, high)` pairs are drawn uniformly per trace."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    train: int = Field(400, ge=0)
    val: int = Field(80, ge=0)
    test: int = Field(80, ge=0)
    # Real acquisitions: 8k-64k samples of 0.05-5 m, pulses of 3 ns-20 us, 1310/1550/1625 nm.
    num_samples: tuple[int, int] = (8192, 65536)
    resolution_m: tuple[float, float] = (0.05, 5.0)  # drawn log-uniformly
    group_index: tuple[float, float] = (1.465, 1.470)
    wavelengths_nm: list[int] = Field(default_factory=lambda: [1310, 1550, 1625])
    attenuation_db_per_km: dict[int, tuple[float, float]] = Field(
        default_factory=lambda: {1310: (0.32, 0.38), 1550: (0.18, 0.22), 1625: (0.20, 0.25)}
    )
    pulse_widths_ns: list[float] = Field(
        default_factory=lambda: [
            3,
            5,
            10,
            20,
            30,
            50,
            100,
            275,
            500,
            1000,
            2000,
            5000,
            10000,
            20000,
        ]
    )
    # A pulse width is picked so the pulse covers this many samples (the width of an event).
    pulse_samples: tuple[float, float] = (3.0, 40.0)
    backscatter_coefficient_db: tuple[float, float] = (-82.0, -79.0)  # for a 1 ns pulse
    launch_level_db: tuple[float, float] = (-12.0, -6.0)  # backscatter at the first sample
    snr_db: tuple[float, float] = (12.0, 32.0)  # launch level above the noise floor
    speckle_db: float = Field(0.02, ge=0)  # coherent-fading ripple on the backscatter (std)
    min_end_margin_db: float = Field(4.0, ge=0)  # fibre end at least this far above the floor
    fibre_end_fraction: tuple[float, float] = (0.45, 0.9)  # where the fibre ends in the trace
    events_per_trace: tuple[int, int] = (1, 7)  # events before the fibre's end
    face_plate_probability: float = Field(0.5, ge=0, le=1)  # else pass_through
    fiber_cut_probability: float = Field(0.35, ge=0, le=1)  # else the fibre ends in fiber_end
    cluster_probability: float = Field(0.3, ge=0, le=1)  # next event right after the previous
    cluster_gap_samples: tuple[int, int] = (4, 200)
    face_plate_loss_db: tuple[float, float] = (0.1, 0.75)
    face_plate_reflectance_db: tuple[float, float] = (-60.0, -28.0)  # strong ones saturate
    pass_through_loss_db: tuple[float, float] = (0.05, 0.5)
    # A splice between fibres of different mode-field diameters reads as a gain in one
    # direction ("gainer"): a pass_through whose step goes up by this much.
    gainer_probability: float = Field(0.1, ge=0, le=1)
    gainer_gain_db: tuple[float, float] = (0.03, 0.2)
    # Launch / receive reels: a spool of fibre between the instrument and the fibre under test
    # (and after its far end), each joined by a connector (a face_plate event at its end).
    launch_reel_probability: float = Field(0.3, ge=0, le=1)
    receive_reel_probability: float = Field(0.2, ge=0, le=1)
    reel_length_m: tuple[float, float] = (150.0, 1000.0)
    # A ghost: the strongest reflection bounced off the front panel and back, seen at twice its
    # distance (no loss, not an event: a detector must not report it).
    ghost_probability: float = Field(0.25, ge=0, le=1)
    ghost_level_db: tuple[float, float] = (-22.0, -10.0)  # its power relative to its source
    saturation_db: tuple[float, float] = (-3.0, 0.0)  # the receiver's ceiling (displayed dB)
    fiber_end_reflectance_db: tuple[float, float] = (-35.0, -14.0)
    fiber_cut_reflective_probability: float = Field(0.5, ge=0, le=1)
    fiber_cut_reflectance_db: tuple[float, float] = (-60.0, -40.0)
    front_panel_reflectance_db: tuple[float, float] = (-45.0, -30.0)
    receiver_tail_fraction: float = Field(0.02, ge=0)  # recovery tail start / reflection level
    receiver_tail_pulses: tuple[float, float] = (0.3, 0.8)  # its time constant, in pulses
    receiver_rc_pulses: float = Field(0.1, ge=0)  # the band limit's time constant, in pulses

    @model_validator(mode="after")
    def _check(self) -> SynthOTDR:
        for name, value in self:
            if isinstance(value, tuple) and value[0] > value[1]:
                raise ValueError(f"synth otdr {name}: low {value[0]} > high {value[1]}")
        missing = [w for w in self.wavelengths_nm if w not in self.attenuation_db_per_km]
        if missing:
            raise ValueError(f"synth otdr attenuation_db_per_km has no range for {missing} nm")
        if not self.pulse_widths_ns or min(self.pulse_widths_ns) <= 0:
            raise ValueError("synth otdr pulse_widths_ns must list positive widths")
        if self.num_samples[0] < 512 or self.resolution_m[0] <= 0:
            raise ValueError("synth otdr needs num_samples >= 512 and resolution_m > 0")
        return self


class SynthIdentity(BaseModel):
    """Size and seed of the synthetic identity dataset (params.yaml `synth.identity`)."""

    model_config = ConfigDict(extra="forbid")

    identities: int = Field(200, ge=2)
    images_per_identity: int = Field(10, ge=1)
    image_size: int = Field(64, ge=MIN_IDENTITY_IMAGE_SIZE)
    seed: int = Field(0, ge=0)


class Synth(BaseModel):
    """params.yaml `synth`: one block per generated dataset."""

    model_config = ConfigDict(extra="forbid")

    detection: SynthDetection = Field(default_factory=SynthDetection)
    otdr: SynthOTDR = Field(default_factory=SynthOTDR)
    identity: SynthIdentity = Field(default_factory=SynthIdentity)
