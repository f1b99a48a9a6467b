"""edge-model-server's command line: TF Serving's flags, clear one-line errors, exit status 2."""
from __future__ import annotations

import json
import urllib.request

import pytest

from edge.errors import FlagError
from edge.model_server.flags import channel_arguments, parse_flags, validate
from tests.support.paths import TFSERVING_TESTDATA
from tests.support.processes import run_model_server


def test_tf_serving_spellings():
    flags = parse_flags(["--port=9000", "--model_name=image_classifier", "--model_base_path=/models/ic",
                         "--rest_api_port", "8501", "--enable_batching", "--enable_model_warmup=false",
                         "--file_system_poll_wait_seconds=0", "--grpc_channel_arguments=a=1,b=x"])
    assert (flags.port, flags.model_name, flags.model_base_path, flags.rest_api_port) == \
        (9000, "image_classifier", "/models/ic", 8501)
    assert flags.enable_batching is True and flags.enable_model_warmup is False
    assert flags.file_system_poll_wait_seconds == 0
    assert channel_arguments(flags.grpc_channel_arguments) == [("a", 1), ("b", "x")]
    assert (flags.grpc_host, flags.rest_api_host) == ("127.0.0.1", "127.0.0.1")
    validate(flags)


def test_defaults_match_tf_serving():
    flags = parse_flags(["--model_base_path=/m"])
    assert (flags.port, flags.rest_api_port, flags.model_name, flags.file_system_poll_wait_seconds,
            flags.rest_api_timeout_in_ms, flags.enable_model_warmup) == (8500, 0, "default", 1, 5000, True)


def test_compatibility_flags_are_accepted():
    flags = parse_flags(["--model_base_path=/m", "--per_process_gpu_memory_fraction=0.5", "--saved_model_tags=serve"])
    assert flags.ignored == ["per_process_gpu_memory_fraction", "saved_model_tags"]


@pytest.mark.parametrize("argv, words", [
    (["--prot=9000"], "unknown flag --prot (did you mean --port?)"),
    (["--port=abc"], "invalid value 'abc' for --port"),
    (["--enable_batching=maybe"], "--enable_batching"),
    (["--model_name"], "flag --model_name needs a value"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_flags(argv, words):
    with pytest.raises(FlagError) as info:
        parse_flags(argv)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("argv, words", [
    ([], "--model_base_path or --model_config_file is required"),
    (["--model_base_path=/a", "--batching_parameters_file=/b"], "without setting --enable_batching"),
    (["--model_base_path=/a", "--rest_api_port=8500"], "cannot be same as --port"),
    (["--model_base_path=/a", "--grpc_channel_arguments=novalue"], "is not key=value"),
])
def test_bad_flag_combinations(argv, words):
    with pytest.raises(FlagError, match=words):
        validate(parse_flags(argv))


@pytest.mark.slow
def test_unknown_flag_exits_2_with_one_line():
    result = run_model_server(["--model_base_path=/m", "--rest_api_prot=8501"])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown flag --rest_api_prot (did you mean --rest_api_port?)" in lines[0]


def test_config_file_wins_over_model_base_path():
    """TF Serving ignores --model_name/--model_base_path when --model_config_file is set."""
    flags = parse_flags(["--model_base_path=/a", "--model_config_file=/b"])
    validate(flags)
    assert flags.model_config_file == "/b"


@pytest.mark.slow
def test_bad_model_config_file_exits_2_with_parse_error():
    """As tensorflow_model_server: protobuf's parse line (line:col) on stderr, main.cc's
    `Failed to start server` line naming the file on stdout."""
    path = TFSERVING_TESTDATA / "bad_model_config.txt"
    result = run_model_server([f"--model_config_file={path}"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:"), result.stderr
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{path}'" in result.stdout


@pytest.mark.slow
def test_bad_batching_file_exits_2(tmp_path):
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size { value: }")
    result = run_model_server(["--model_base_path=/m", "--enable_batching", f"--batching_parameters_file={bad}"])
    assert result.returncode == 2
    assert "Error parsing text-format tensorflow.serving.BatchingParameters: 1:25: Expected integer" in result.stderr
    assert f"Invalid protobuf file: '{bad}'" in result.stdout


@pytest.mark.slow
def test_help_and_version():
    result = run_model_server(["--help"])
    assert result.returncode == 0 and "--model_base_path" in result.stdout
    result = run_model_server(["--version"])
    assert result.returncode == 0 and "edge-model-server" in result.stdout


def test_tf_serving_docs_command_and_sigterm(model_server_factory, tmp_path):
    """`tensorflow_model_server --port=9000 --model_name=image_classifier --model_base_path=...` with the
    program name changed (the fixture picks a free --port); SIGTERM stops it with exit status 0."""
    server = model_server_factory("--model_name=image_classifier",
                                  f"--model_base_path={TFSERVING_TESTDATA / 'saved_model_half_plus_two_cpu'}",
                                  "--enable_batching", f"--batching_parameters_file={TFSERVING_TESTDATA / 'batching_config.txt'}",
                                  "--file_system_poll_wait_seconds=1")
    body = json.dumps({"instances": [[2.0]]}).encode()
    request = urllib.request.Request(server.rest_url + "/v1/models/image_classifier:predict", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert json.loads(resp.read()) == {"predictions": [[3.0]]}
    assert server.stop() == 0
    assert "Running gRPC ModelServer at 127.0.0.1:" in server.log()
