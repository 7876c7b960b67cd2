"""The benchmark_model output parser on recorded formats, and the batch script/output round trip."""

import shlex
from pathlib import Path

import pytest

from ofa_deploy.backend.timing import TimingOptions
from ofa_deploy.backends.adb.backend import parse_benchmark_output
from ofa_deploy.backends.adb.batch import BenchmarkCommand, batch_script, parse_batch_output, stats_from_rounds
from ofa_deploy.backends.adb.benchmark_model_output import BenchmarkBinaryMissingError, BenchmarkFailedError
from ofa_deploy.errors import OFADeployError, TargetUnavailableError

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "count", "mean", "std", "minimum", "warmup"),
    [
        ("litert_info_prefix.txt", 10, 1.0027, 0.016, 0.981, 1.0704),
        ("percentiles.txt", 833, 1.2005, 0.038, 1.149, 1.2133),
        ("all_same.txt", 3, 0.004, 0.0, 0.004, 0.009),
        ("tflite_1x_average.txt", 50, 41.5862, 0.150, 41.287, 42.3908),
        ("old_curr_first.txt", 20, 29.9405, 0.301, 29.501, 30.210),
        ("op_profiling.txt", 770, 1.2978, 0.030, 1.249, 1.3119),
    ],
)
def test_timings_of_every_format(name, count, mean, std, minimum, warmup):
    result = parse_benchmark_output(fixture(name))
    assert result.count == count
    assert result.mean_ms == pytest.approx(mean)
    assert result.std_ms == pytest.approx(std)
    assert result.min_ms == pytest.approx(minimum)
    assert result.warmup_ms == pytest.approx(warmup)


def test_summary_fields_and_percentiles():
    result = parse_benchmark_output(fixture("percentiles.txt"))
    assert (result.p5_ms, result.median_ms, result.p95_ms) == pytest.approx((1.157, 1.194, 1.262))
    assert result.init_ms == pytest.approx(2.5) and result.first_ms == pytest.approx(1.56)
    assert result.model == "/data/local/tmp/ofa-deploy/models/a.tflite"
    old = parse_benchmark_output(fixture("tflite_1x_average.txt"))
    assert old.init_ms == pytest.approx(45.076) and old.first_ms == pytest.approx(51.230)


def test_op_profiling_table_of_the_regular_runs():
    ops = parse_benchmark_output(fixture("op_profiling.txt")).ops
    assert [op.name for op in ops][:2] == [
        "Delegate/Convolution (NHWC, F32) IGEMM:0",
        "Delegate/Convolution (NHWC, F32) DWConv:1",
    ]
    assert len(ops) == 4  # not the initialisation table, not "Top by Computation Time"
    assert ops[0].node_type == "Convolution (NHWC, F32) IGEMM"
    assert ops[0].avg_ms == pytest.approx(0.498) and ops[0].percent == pytest.approx(38.56)
    assert ops[0].times_called == 1
    assert sum(op.avg_ms for op in ops) == pytest.approx(1.291)


@pytest.mark.parametrize(
    ("name", "error", "words"),
    [
        (
            "error_line.txt",
            BenchmarkFailedError,
            "failed on /data/local/tmp/ofa-deploy/models/missing.tflite: Could not",
        ),
        ("not_found.txt", BenchmarkBinaryMissingError, "could not run benchmark_model for my-model"),
        ("segfault.txt", BenchmarkFailedError, "crashed on /data/local/tmp/ofa-deploy/models/big.tflite"),
        ("aborted.txt", BenchmarkFailedError, "crashed on /data/local/tmp/ofa-deploy/models/odd.tflite"),
        ("garbage.txt", BenchmarkFailedError, "printed no timings for my-model"),
    ],
)
def test_failures_name_the_model(name, error, words):
    model = "my-model" if name in ("not_found.txt", "garbage.txt") else None
    with pytest.raises(error, match=words) as info:
        parse_benchmark_output(fixture(name), model=model)
    assert isinstance(info.value, OFADeployError) and "\n" not in str(info.value)
    assert isinstance(info.value, TargetUnavailableError) == (error is BenchmarkBinaryMissingError)


def test_empty_output_is_an_error():
    with pytest.raises(BenchmarkFailedError, match="no output"):
        parse_benchmark_output("", model="m")


def test_batch_script_quotes_paths_and_interleaves_the_reference():
    command = BenchmarkCommand("./benchmark_model", TimingOptions(threads=2, warmup=1, rounds=2, runs=3), False, "f0")
    hostile = "models/a b;touch PWNED'$(x).tflite"
    script = batch_script(command, [hostile, "models/b.tflite"], "models/ref.tflite", 2, 0.5, [hostile])
    runs = [shlex.split(line)[:-1] for line in script.splitlines() if line.startswith("taskset")]
    assert len(runs) == 2 * 2 * 2  # rounds x models x (model, reference)
    assert runs[0] == [
        "taskset",
        "f0",
        "./benchmark_model",
        f"--graph={hostile}",
        "--num_threads=2",
        "--num_runs=3",
        "--warmup_runs=1",
        "--min_secs=0",
        "--warmup_min_secs=0",
        "--use_xnnpack=false",
    ]
    assert [r[3] for r in runs[:4]] == [f"--graph={p}" for p in (hostile, "models/ref.tflite", "models/b.tflite")] + [
        "--graph=models/ref.tflite"
    ]
    assert script.count("sleep 0.5") == 1 and shlex.split(script.splitlines()[-2]) == ["rm", "-f", hostile]


def _run_output(avg_us: int, tag: str, r: int) -> str:
    return (
        f"@@ofa-deploy begin {tag} {r}\nINFO: count=3 first={avg_us} curr={avg_us} min={avg_us - 10} "
        f"max={avg_us + 10} avg={avg_us} std=5\n@@ofa-deploy end 0\n"
    )


def test_batch_output_becomes_normalised_stats():
    text = (
        "".join(_run_output(1000 + 100 * r, "m0", r) + _run_output(510 + 10 * r, "ref", r) for r in range(3))
        + "@@ofa-deploy done\n"
    )
    results = parse_batch_output(text, ["key-a"], "ref-key")
    stats = stats_from_rounds(results.model_rounds[0], results.reference_rounds[0], 0.5)
    assert stats.count == 9 and stats.raw_estimate == pytest.approx(1.09)
    assert stats.reference_ms == pytest.approx(0.51)
    # median over rounds of (round minimum / reference minimum) x baseline, as on the host
    assert stats.estimate == pytest.approx(0.5 * 1.09 / 0.51)
    assert stats.mean == pytest.approx(1.1) and stats.min == pytest.approx(0.99)


def test_batch_failure_and_truncation_name_the_model():
    crashed = "@@ofa-deploy begin m0 0\nSegmentation fault\n@@ofa-deploy end 139\n@@ofa-deploy done\n"
    with pytest.raises(BenchmarkFailedError, match="crashed on key-a"):
        parse_batch_output(crashed, ["key-a"], None)
    cut = _run_output(1000, "m0", 0) + "@@ofa-deploy begin m1 0\nINFO: Loaded model\n"
    with pytest.raises(BenchmarkFailedError, match="did not finish on key-b"):
        parse_batch_output(cut, ["key-a", "key-b"], None)
    status = "@@ofa-deploy begin m0 0\nINFO: count=3 curr=5(all same)\n@@ofa-deploy end 1\n@@ofa-deploy done\n"
    with pytest.raises(BenchmarkFailedError, match="status 1 on key-a"):
        parse_batch_output(status, ["key-a"], None)


def test_a_crashed_wrapper_script_is_named_by_its_exception_not_the_traceback_header():
    """A wrapper around benchmark_model that crashed: the one-line error names the exception (and a
    FileNotFoundError inside it does not make the binary "missing")."""
    text = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/data/local/tmp/ofa-deploy/benchmark_model", line 19, in <module>',
            "    conn.connect(path)",
            "FileNotFoundError: [Errno 2] No such file or directory",
        ]
    )
    with pytest.raises(BenchmarkFailedError, match=r"crashed on m: FileNotFoundError: \[Errno 2\] No such") as info:
        parse_benchmark_output(text, model="m")
    assert not isinstance(info.value, BenchmarkBinaryMissingError)
