"""Bundles cannot be turned against their user; outputs are atomic, readable by the group, and locked."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from ofa_deploy.cli.main import main
from ofa_deploy.deploy.integrity import manifest_digest

ARCH = {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 128}
FAST = ["--rounds", "2", "--runs", "3"]


@pytest.fixture
def arch_file(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(ARCH))
    return path


def compile_to(arch_file, out, *extra) -> int:
    return main(["compile", "--arch", str(arch_file), "--backend", "onnxruntime", "--out", str(out), *extra])


@pytest.fixture
def bundle(arch_file, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert compile_to(arch_file, out) == 0
    capsys.readouterr()
    return out


def rewrite(bundle, edit) -> None:
    """Edit the manifest the way a careful forger would: content changed, digest recomputed."""
    path = bundle / "manifest.json"
    document = json.loads(path.read_text())
    edit(document)
    document["manifest_sha256"] = manifest_digest(document)
    path.write_text(json.dumps(document))


def refused(bundle, capsys, *words, extra=()) -> None:
    code = main(["benchmark", str(bundle), *FAST, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    for word in words:
        assert word in err[0], err[0]


def test_manifest_edits_are_detected(bundle, capsys):
    path = bundle / "manifest.json"
    document = json.loads(path.read_text())
    assert document["manifest_sha256"] == manifest_digest(document)
    document["predicted_latency"] = {"ms": 0.1, "uncalibrated_ms": 0.1, "lut": {}}
    path.write_text(json.dumps(document, indent=2))
    refused(bundle, capsys, "modified after ofa-deploy wrote it")


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/hostname", "a/../../x", "sub\\x", ""])
def test_paths_leaving_the_bundle_are_refused(bundle, capsys, name):
    def edit(document):
        document["artifact"]["files"].append(name)
        document["checksums"][name] = "0" * 64

    rewrite(bundle, edit)
    refused(bundle, capsys, "refusing the bundle")


def test_symlinked_artifact_is_refused(bundle, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    model = bundle / "model.onnx"
    model.unlink()
    model.symlink_to(secret)
    refused(bundle, capsys, "symbolic link")


def test_benchmark_still_updates_a_verified_manifest(bundle, capsys):
    assert main(["benchmark", str(bundle), *FAST, "--json"]) == 0
    capsys.readouterr()
    document = json.loads((bundle / "manifest.json").read_text())
    assert len(document["measurements"]) == 1 and document["manifest_sha256"] == manifest_digest(document)
    assert main(["benchmark", str(bundle), *FAST, "--json"]) == 0  # the toolkit's own update re-digests


def test_compile_refuses_a_non_empty_directory_and_force_replaces_it_whole(arch_file, bundle, capsys):
    (bundle / "stale.txt").write_text("from an older bundle")
    assert compile_to(arch_file, bundle) == 2
    assert "--force" in capsys.readouterr().err
    assert compile_to(arch_file, bundle, "--force") == 0
    assert not (bundle / "stale.txt").exists()  # nothing of the old bundle mixed in
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".bundle.")]  # no leftovers


def test_a_compile_killed_between_two_renames_gets_the_old_bundle_back(arch_file, bundle, capsys):
    """Where the swap is two renames (no atomic exchange), a kill between them leaves the old bundle
    set aside and none in place: the next run under the lock puts it back before anything else."""
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    os.rename(bundle, bundle.parent / ".bundle.replaced-999999")
    assert compile_to(arch_file, bundle) == 2 and "--force" in capsys.readouterr().err  # it is back, whole
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".bundle.")]


def test_force_swaps_the_bundle_in_one_atomic_exchange(arch_file, bundle, monkeypatch):
    """On Linux the new bundle and the old one change places in one renameat2(RENAME_EXCHANGE): there is
    no moment without a bundle (the two-rename fallback is never taken here)."""
    import ofa_deploy.files as files

    def no_fallback(*args):
        raise AssertionError("the two-rename fallback ran")

    monkeypatch.setattr(files.os, "rename", no_fallback)
    assert compile_to(arch_file, bundle, "--force") == 0
    assert (bundle / "manifest.json").is_file()
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".bundle.")]


def test_interrupted_compile_leaves_the_old_bundle(arch_file, bundle, monkeypatch):
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    from ofa_deploy.backends.onnxruntime import OnnxRuntimeBackend

    def interrupted(self, graph, directory):
        (directory / "model.onnx").write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(OnnxRuntimeBackend, "compile", interrupted)
    assert compile_to(arch_file, bundle, "--force") == 130
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".bundle.")]


def test_outputs_respect_the_umask(arch_file, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "b"
        assert compile_to(arch_file, out) == 0
        lut = tmp_path / "t.json"
        assert main(["profile", "--device", "dpu-b4096", "--resolutions", "160", "--out", str(lut)]) == 0
    finally:
        os.umask(old)
    for path in (out / "manifest.json", out / "model.onnx", lut):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_the_umask_is_read_without_being_changed():
    """Reading the umask by setting another (os.umask) would let a file that another thread creates
    meanwhile skip it: fleet deploys write records from threads."""
    from ofa_deploy import files

    old = os.umask(0o027)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "umask", lambda *_: pytest.fail("the umask was changed to read it"))
            assert files._umask() == 0o027 and files.file_mode() == 0o640 and files.dir_mode() == 0o750
    finally:
        os.umask(old)


def test_unwritable_output_is_one_line(arch_file, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    assert compile_to(arch_file, blocker / "bundle") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocker) in err[0]


def test_profile_output_is_locked_and_a_stale_lock_recovered(tmp_path, capsys):
    out = tmp_path / "t.json"
    hold = f"from ofa_deploy.files import output_lock\nwith output_lock({str(out)!r}):"
    hold += " print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # another run holds the lock (an OS file lock)
        args = ["profile", "--device", "dpu-b4096", "--resolutions", "160", "--out", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and not out.exists()
    finally:
        holder.kill()  # killed while holding: the kernel releases the lock
        holder.wait()
    assert main(args) == 0  # the holder is gone: its lock is stale and recovered
    assert out.exists() and not (tmp_path / "t.json.lock").exists()


def test_signed_bundles_verify_and_tampering_is_caught(arch_file, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    def write_key(name):
        key = ed25519.Ed25519PrivateKey.generate()
        private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return private, public

    mine, theirs = write_key("mine"), write_key("theirs")
    out = tmp_path / "signed"
    assert compile_to(arch_file, out, "--sign-key", str(mine[0])) == 0
    capsys.readouterr()
    assert main(["benchmark", str(out), *FAST, "--verify-key", str(mine[1]), "--json"]) == 0
    capsys.readouterr()
    refused(out, capsys, "signature does not match", extra=("--verify-key", str(theirs[1])))
    rewrite(out, lambda d: d["arch"].update(r=224))  # digest recomputed: only the signature can tell
    refused(out, capsys, "signature does not match", extra=("--verify-key", str(mine[1])))
    unsigned = tmp_path / "unsigned"
    assert compile_to(arch_file, unsigned) == 0
    capsys.readouterr()
    refused(unsigned, capsys, "not signed", extra=("--verify-key", str(mine[1])))


def test_verify_key_without_cryptography_is_the_install_hint(arch_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "b"
    assert compile_to(arch_file, out) == 0
    capsys.readouterr()
    for module in ("cryptography", "cryptography.exceptions", "cryptography.hazmat.primitives.serialization"):
        monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError, as if not installed
    assert main(["benchmark", str(out), *FAST, "--verify-key", str(tmp_path / "any.pub.pem")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'ofa-deploy[sign]'" in err[0], err
