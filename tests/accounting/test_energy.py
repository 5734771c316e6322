"""The energy meter with a fake NVML (none here) and fake or unreadable RAPL trees: it measures what it can,
flags what it estimates, and never raises into training."""

import time
import types

import pytest

from robustscale.accounting.backends import J_PER_KWH, EstimateBackend, default_backends
from robustscale.accounting.energy import EnergyMeter, EnergyReading, merge_ranks, reduce_across_ranks


class NotSupported(Exception):
    pass


def fake_nvml(names=("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"), counter=True, power_mw=250_000):
    """A pynvml stand-in: energy counters the test advances by hand, constant power."""
    nvml = types.SimpleNamespace(energy_mj=[1_000_000] * len(names), power_mw=power_mw, calls=[], fail=False)
    nvml.NVMLError = NotSupported
    nvml.nvmlInit = lambda: nvml.calls.append("init")
    nvml.nvmlShutdown = lambda: nvml.calls.append("shutdown")
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetHandleByUUID = lambda u: int(u.split("-")[-1])
    nvml.nvmlDeviceGetName = lambda h: names[h].encode()  # old pynvml returns bytes

    def energy(h):
        if not counter:
            raise NotSupported("NVML_ERROR_NOT_SUPPORTED")
        if nvml.fail:
            raise RuntimeError("GPU fell off the bus")
        return nvml.energy_mj[h]

    nvml.nvmlDeviceGetTotalEnergyConsumption = energy
    nvml.nvmlDeviceGetPowerUsage = lambda h: nvml.power_mw
    return nvml


def test_nvml_energy_counter_every_gpu(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = fake_nvml()
    with EnergyMeter(sample_interval_s=0.02, backends=default_backends([0, 1], nvml=nvml, rapl_root=tmp_path)) as meter:
        time.sleep(0.1)
        nvml.energy_mj = [e + 360_000_000 for e in nvml.energy_mj]  # 360 kJ = 0.1 kWh on each GPU
    r = meter.reading
    assert r.gpu_kwh == pytest.approx(0.2)
    assert not r.gpu_estimated and r.gpu_source == "nvml-counter"
    assert r.gpu_names == ["NVIDIA H100 80GB HBM3"] * 2
    assert r.trace and all(w == pytest.approx(500.0) for _, w in r.trace)  # both GPUs' power, measured
    assert r.cpu_estimated and r.estimated  # no RAPL here: the CPU part is an estimate, and says so
    assert nvml.calls == ["init", "shutdown"]


def test_cuda_visible_devices_maps_to_nvml_devices(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-uuid-1")
    nvml = fake_nvml(names=("A100-0", "NVIDIA A100-SXM4-80GB"))
    with EnergyMeter(sample_interval_s=0.05, backends=default_backends([0], cpu=False, nvml=nvml)) as meter:
        nvml.energy_mj[1] += 3_600_000  # only physical GPU 1 is this process's cuda:0
    assert meter.reading.gpu_names == ["NVIDIA A100-SXM4-80GB"]
    assert meter.reading.gpu_kwh == pytest.approx(0.001)


def test_nvml_power_sampling_where_the_counter_is_unsupported(tmp_path):
    nvml = fake_nvml(counter=False, power_mw=300_000)
    with EnergyMeter(sample_interval_s=0.02, backends=default_backends([0, 1], cpu=False, nvml=nvml)) as meter:
        time.sleep(0.3)
    r = meter.reading
    assert r.gpu_source == "nvml-sampled" and not r.estimated
    assert r.gpu_kwh * J_PER_KWH == pytest.approx(600.0 * r.seconds, rel=0.1)
    assert r.mean_power_w == pytest.approx(600.0, rel=0.1)
    assert len(r.trace) >= 5


def test_nvml_failing_mid_run_keeps_what_it_measured(tmp_path, caplog):
    nvml = fake_nvml()
    meter = EnergyMeter(sample_interval_s=0.01, backends=default_backends([0], cpu=False, nvml=nvml)).start()
    nvml.energy_mj[0] += 7_200_000  # 2 Wh measured, then the counter breaks
    time.sleep(0.05)
    nvml.fail = True
    time.sleep(0.05)
    r = meter.stop()
    assert r.gpu_kwh == pytest.approx(0.002)
    assert "NVML energy counter failed" in caplog.text


def test_nvml_absent_falls_back_to_a_flagged_tdp_estimate(tmp_path):
    def no_driver():
        raise NotSupported("NVML Shared Library Not Found")  # what pynvml says on a machine without the driver

    nvml = types.SimpleNamespace(nvmlInit=no_driver)
    with EnergyMeter(sample_interval_s=0.05, backends=default_backends([0], nvml=nvml, rapl_root=tmp_path)) as meter:
        time.sleep(0.05)
    r = meter.reading
    assert r.gpu_estimated and r.estimated and r.gpu_source == "tdp-estimate"
    assert r.gpu_kwh > 0
    assert any("NVMLBackend unavailable" in w for w in r.warnings)
    assert any("estimated at 80% of TDP" in w for w in r.warnings)


def test_the_meter_chooses_this_machines_backends_by_default():
    """No hook given: the default backends for what is here (no GPU on a CPU machine; the CPU metered or estimated)."""
    with EnergyMeter([], sample_interval_s=0.05) as meter:
        sum(i * i for i in range(100_000))
    r = meter.reading
    assert r.gpu_source == "none" and r.cpu_source in ("rapl", "process-estimate") and r.cpu_kwh > 0


def _zone(root, name, label, energy, max_uj=10**9):
    zone = root / name
    zone.mkdir()
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_package_and_dram_with_wraparound(tmp_path):
    pkg = _zone(tmp_path, "intel-rapl:0", "package-0", 999_000_000, max_uj=1_000_000_000)
    _zone(tmp_path, "intel-rapl:0:0", "core", 5)  # inside the package: not added again
    dram = _zone(tmp_path, "intel-rapl:0:1", "dram", 0)
    _zone(tmp_path, "intel-rapl:1", "psys", 0)  # the whole platform: would double count
    with EnergyMeter(sample_interval_s=10, backends=default_backends([], rapl_root=tmp_path)) as meter:
        (pkg / "energy_uj").write_text("2000000\n")  # wrapped: 1 J to the top, then 2 J
        (dram / "energy_uj").write_text("500000\n")
        (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("99999999\n")
    r = meter.reading
    assert r.cpu_kwh * J_PER_KWH == pytest.approx(3.5)
    assert r.cpu_source == "rapl" and not r.estimated
    assert r.gpu_kwh == 0 and r.gpu_source == "none"


def test_rapl_unreadable_or_absent_means_estimated(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").mkdir()  # reading it fails, as a root-only file does for users
    for root in (tmp_path, tmp_path / "missing"):
        with EnergyMeter(sample_interval_s=0.05, backends=default_backends([], rapl_root=root)) as meter:
            sum(i * i for i in range(300_000))  # some CPU time
        r = meter.reading
        assert r.cpu_estimated and r.estimated and r.cpu_source == "process-estimate"
        assert r.cpu_kwh > 0


def test_ddp_ranks_other_than_local_zero_skip_a_readable_package(tmp_path):
    _zone(tmp_path, "intel-rapl:0", "package-0", 0)
    with EnergyMeter(backends=default_backends([], count_cpu_package=False, rapl_root=tmp_path)) as meter:
        pass
    assert meter.reading.cpu_source == "none" and meter.reading.cpu_kwh == 0
    with EnergyMeter(backends=default_backends([], count_cpu_package=False, rapl_root=tmp_path / "missing")) as meter:
        pass  # unreadable everywhere: each rank estimates its own process
    assert meter.reading.cpu_source == "process-estimate"


def test_estimate_is_cpu_seconds_times_watts_per_core():
    backend = EstimateBackend(watts_per_core=10.0)
    backend.start()
    t0 = time.process_time()
    sum(i * i for i in range(500_000))
    backend.poll()
    assert backend.joules == pytest.approx(10.0 * (time.process_time() - t0), rel=0.2, abs=0.05)


def test_a_broken_backend_never_raises_into_training(caplog):
    class Broken(EstimateBackend):
        def poll(self):
            raise OSError("sensor gone")

    meter = EnergyMeter(backends=[Broken()], sample_interval_s=0.01)
    with meter:
        time.sleep(0.05)
    assert any("stopped reading" in w for w in meter.reading.warnings)

    class WontStart(EstimateBackend):
        def start(self):
            raise PermissionError("no")

    with EnergyMeter(backends=[WontStart()]) as meter:
        pass
    assert meter.reading.kwh == 0 and "WontStart unavailable" in meter.reading.warnings[0]


def test_decorator_segments_add_up(tmp_path):
    meter = EnergyMeter(sample_interval_s=0.05, backends=default_backends([], rapl_root=tmp_path))

    @meter
    def work():
        time.sleep(0.05)

    work()
    work()
    assert meter.reading.seconds >= 0.1
    assert meter.reading.cpu_source == "process-estimate"


def test_readings_add_across_resume_segments_and_round_trip():
    a = EnergyReading(gpu_kwh=1.0, cpu_kwh=0.5, seconds=100, gpu_source="nvml-counter", cpu_source="rapl",
                      gpu_names=["H100"], trace=[(0.0, 700.0), (50.0, 690.0)])
    b = EnergyReading(gpu_kwh=2.0, cpu_kwh=0.25, seconds=200, cpu_estimated=True, gpu_source="nvml-counter",
                      cpu_source="process-estimate", trace=[(0.0, 710.0)])
    total = EnergyReading.from_state_dict(a.state_dict()) + b
    assert (total.gpu_kwh, total.cpu_kwh, total.seconds) == (3.0, 0.75, 300)
    assert total.estimated and total.cpu_estimated and not total.gpu_estimated
    assert total.cpu_source == "rapl+process-estimate"  # never silently mixed
    assert total.trace[-1] == (100.0, 710.0)
    assert total.mean_power_w == pytest.approx(3.75 * J_PER_KWH / 300)
    ranks = merge_ranks([a, a])
    assert (ranks.gpu_kwh, ranks.seconds, ranks.gpu_names) == (2.0, 100, ["H100", "H100"])
    assert ranks.trace[0] == (0.0, 1400.0)
    assert reduce_across_ranks(a) is a  # no process group: a no-op


def reduce_on_rank() -> list[dict]:
    """One rank of a two-process gloo group (robustscale's launcher): its own reading, reduced; every rank's result,
    gathered to rank 0."""
    import torch.distributed as dist

    from robustscale.training.distributed import cleanup, init_distributed

    info = init_distributed()
    try:
        reading = EnergyReading(gpu_kwh=info.rank + 1.0, seconds=10.0 * (info.rank + 1),
                                gpu_names=[f"gpu{info.rank}"])
        states: list = [None] * info.world_size
        dist.all_gather_object(states, reduce_across_ranks(reading).state_dict())
        return states
    finally:
        cleanup()


@pytest.mark.slow
@pytest.mark.xdist_group("ports")
def test_reduce_across_gloo_ranks():
    """Two real gloo processes: energies add, time is the longest, every rank gets the sum."""
    from robustscale.training.launch import launch

    states = launch(reduce_on_rank, (), 2, threads=1)
    assert len(states) == 2
    for state in states:
        assert state["gpu_kwh"] == 3.0 and state["seconds"] == 20.0
        assert state["gpu_names"] == ["gpu0", "gpu1"]
