"""``orcd serve`` argument validation: every bad value is refused before anything loads."""

from __future__ import annotations

import pytest

from orcd_toolkit.cli import build_parser, main

BAD_ARGS: list[tuple[list[str], str]] = [
    (["--port", "70000"], "--port must be in [0, 65535], got 70000"),
    (["--port", "http"], "--port must be an integer, got 'http'"),
    (["--host", "bad host"], "--host must be a host name or IP address"),
    (["--host", "exa_mple.com"], "--host must be an IP address or a DNS name"),
    (["--worker-id", "abc"], "--worker-id must be a UUID, got 'abc'"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--gpu-device", "-1"], "--gpu-device must be in [0, 63], got -1"),
    (["--api-key", "short"], "--api-key must be at least 8 characters"),
    (["--api-key", "has space in it"], "--api-key must be printable ASCII without spaces"),
    (["--max-tokens-in", "0"], "--max-tokens-in must be in [1, 1048576], got 0"),
    (["--max-tokens-out", "x"], "--max-tokens-out must be an integer, got 'x'"),
    (["--inference-timeout-sec", "0"], "--inference-timeout-sec must be in (0, 86400], got 0"),
    (["--inference-timeout-sec", "nan?"], "--inference-timeout-sec must be a number"),
    (["--kv-cache-size-mb", "0"], "--kv-cache-size-mb must be in [1, 1048576], got 0"),
    (["--max-concurrent", "0"], "--max-concurrent must be in [1, 4096], got 0"),
    (["--max-jobs-per-connection", "5000"], "--max-jobs-per-connection must be in [1, 4096]"),
    (["--max-message-bytes", "10"], "--max-message-bytes must be in [1024, 67108864], got 10"),
    (["--drain-timeout-sec", "-1"], "--drain-timeout-sec must be in (0, 3600], got -1"),
    (["--callback-url", "ftp://x/y"], "--callback-url must be an http:// or https:// URL"),
    (["--callback-url", "http://"], "--callback-url must be an http:// or https:// URL"),
    (["--log-format", "xml"], "invalid choice: 'xml'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGS, ids=[a[0][0] + " " + a[0][1]
                                                            for a in BAD_ARGS])
def test_bad_arguments_exit_2_naming_the_argument(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--model", "smollm2", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_model_is_required_and_an_unknown_model_fails_fast(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve"])
    assert "--model" in capsys.readouterr().err
    assert main(["serve", "--model", "no-such-model-xyz"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-model-xyz" in err and "known models" in err


def test_defaults_are_loopback_and_sane() -> None:
    args = build_parser().parse_args(["serve", "--model", "smollm2"])
    assert args.host == "127.0.0.1" and args.port == 8080 and args.device == "auto"
    assert args.worker_id is None and args.max_tokens_out == 2048 and not args.log_prompts
    args = build_parser().parse_args(["serve", "--model", "m", "--host", "[::1]", "--worker-id",
                                      "6F1C2D0E-8A51-4E1B-9C43-2B1F6F0C9A11"])
    assert args.host == "::1" and args.worker_id == "6f1c2d0e-8a51-4e1b-9c43-2b1f6f0c9a11"


def test_busy_port_is_a_one_line_error(tmp_path, testdata, capsys) -> None:
    import socket

    from tiny_model import write_tiny_llama

    model = write_tiny_llama(tmp_path / "m.gguf", testdata / "vocab" / "ggml-vocab-gpt-2.gguf")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--model", str(model), "--device", "cpu", "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_device_gpu_without_a_usable_gpu_backend_fails_load_with_exit_1(tmp_path, testdata,
                                                                         capfd) -> None:
    from tiny_model import write_tiny_llama

    from orcd_toolkit.kernels.device import gpu_status

    if gpu_status().usable:
        pytest.skip("a GPU is usable here: --device gpu may load")
    model = write_tiny_llama(tmp_path / "m.gguf", testdata / "vocab" / "ggml-vocab-gpt-2.gguf")
    rc = main(["serve", "--model", str(model), "--device", "gpu", "--port", "0",
               "--log-format", "json"])
    assert rc == 1
    err = capfd.readouterr().err
    assert '"event": "model.load_failed"' in err and "--device gpu" in err
