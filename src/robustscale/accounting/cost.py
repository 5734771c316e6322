"""From IT energy to what the paper reports: facility energy (x PUE), electricity cost and CO2e.

``energy_kwh = energy_kwh_it * pue``; ``cost_usd = energy_kwh * price_per_kwh``;
``co2_kg = energy_kwh * carbon_g_per_kwh / 1000``; optionally ``cloud_cost_usd = gpu_hours * gpu_hour_usd``.
The defaults are the paper's (Sec. III-B): PUE 1.58 (global data-centre average, 2018), $0.12/kWh (US average) and
566.3 gCO2e/kWh (the US figure of the ML CO2 Impact calculator, Lacoste et al. 2019). ``accounting.region`` picks a
preset from :data:`REGIONS`, which replaces both the price and the carbon intensity; a preset without a price keeps
``accounting.price_per_kwh``. Grid intensities move year to year: the presets name their source and year, and any
number can be overridden in the config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from robustscale.errors import ConfigError

__all__ = ["Region", "REGIONS", "CostModel", "Cost", "get_region", "PAPER_PUE", "PAPER_PRICE_PER_KWH",
           "PAPER_CARBON_G_PER_KWH"]

PAPER_PUE = 1.58
PAPER_PRICE_PER_KWH = 0.12
PAPER_CARBON_G_PER_KWH = 566.3


@dataclass(frozen=True)
class Region:
    name: str
    carbon_g_per_kwh: float  # gCO2e per kWh drawn from the grid
    price_per_kwh: float | None  # USD; None: keep the configured price
    source: str


REGIONS: dict[str, Region] = {
    r.name: r
    for r in [
        Region("us-paper", PAPER_CARBON_G_PER_KWH, PAPER_PRICE_PER_KWH,
               "the paper (Sec. III-B): ML CO2 Impact calculator US figure (Lacoste et al., 2019), US average price"),
        Region("us", 390.0, 0.127, "US EIA: about 0.86 lb CO2 per kWh generated in 2022; all-sector average retail "
                                    "price 2023 (approx.)"),
        Region("world", 480.0, None, "Ember, Global Electricity Review 2024: world average for 2023"),
        Region("eu", 251.0, None, "European Environment Agency: EU-27 generation intensity for 2022"),
        Region("germany", 380.0, None, "Umweltbundesamt: German electricity mix for 2023 (provisional)"),
        Region("uk", 207.0, None, "UK DESNZ greenhouse-gas conversion factors 2023: grid electricity generated"),
        Region("france", 56.0, None, "Ember: France generation intensity for 2023 (approx.; nuclear and hydro)"),
    ]
}


def get_region(name: str) -> Region:
    """A preset by name (case-insensitive), or a one-line :class:`ConfigError` listing the presets."""
    region = REGIONS.get(name.strip().lower())
    if region is None:
        raise ConfigError(f"accounting.region: unknown region '{name}': choose one of {', '.join(REGIONS)} or set "
                          "accounting.carbon_g_per_kwh and accounting.price_per_kwh yourself")
    return region


@dataclass(frozen=True)
class Cost:
    energy_kwh: float  # facility energy, after PUE
    cost_usd: float
    co2_kg: float
    cloud_cost_usd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CostModel:
    """PUE, electricity price and grid carbon intensity, plus an optional cloud price per GPU-hour."""

    pue: float = PAPER_PUE
    price_per_kwh: float = PAPER_PRICE_PER_KWH
    carbon_g_per_kwh: float = PAPER_CARBON_G_PER_KWH
    gpu_hour_usd: float | None = None
    region: str | None = None
    source: str = REGIONS["us-paper"].source

    @classmethod
    def from_config(cls, acfg) -> "CostModel":
        """From an :class:`robustscale.config.AccountingConfig` (a region preset replaces price and carbon)."""
        price, carbon, source = acfg.price_per_kwh, acfg.carbon_g_per_kwh, "config (accounting section)"
        if acfg.region:
            region = get_region(acfg.region)
            carbon, source = region.carbon_g_per_kwh, region.source
            price = region.price_per_kwh if region.price_per_kwh is not None else price
            return cls(acfg.pue, price, carbon, acfg.gpu_hour_usd, region.name, source)
        if (price, carbon) == (PAPER_PRICE_PER_KWH, PAPER_CARBON_G_PER_KWH):
            source = REGIONS["us-paper"].source
        return cls(acfg.pue, price, carbon, acfg.gpu_hour_usd, None, source)

    def cost(self, energy_kwh_it: float, gpu_hours: float | None = None) -> Cost:
        """Facility energy, electricity cost and CO2e of ``energy_kwh_it`` (IT energy, before PUE)."""
        energy = energy_kwh_it * self.pue
        cloud = gpu_hours * self.gpu_hour_usd if self.gpu_hour_usd is not None and gpu_hours is not None else None
        return Cost(energy_kwh=energy, cost_usd=energy * self.price_per_kwh,
                    co2_kg=energy * self.carbon_g_per_kwh / 1000.0, cloud_cost_usd=cloud)

    def assumptions(self) -> dict[str, Any]:
        return {"pue": self.pue, "price_per_kwh": self.price_per_kwh, "carbon_g_per_kwh": self.carbon_g_per_kwh,
                "region": self.region, "source": self.source, "gpu_hour_usd": self.gpu_hour_usd}
