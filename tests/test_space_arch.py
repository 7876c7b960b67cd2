"""Archs of the design space (ofa_deploy/space/arch.py):
validation, sampling, mutation, crossover and the batch form."""

import json

import numpy as np
import pytest

from ofa_deploy.errors import BadInputError, InvalidArchError
from ofa_deploy.space.arch import (
    N_BLOCKS,
    RESOLUTIONS,
    Arch,
    ArchBatch,
    crossover_arch,
    crossover_batch,
    load_arch_file,
    mutate_arch,
    mutate_batch,
    sample_arch,
    sample_batch,
)

TUTORIAL = {
    "ks": [5, 3, 3, 3, 5, 3, 3, 3, 7, 7, 3, 3, 5, 5, 7, 3, 3, 3, 5, 3],
    "e": [3, 3, 3, 3, 4, 4, 3, 3, 6, 3, 4, 3, 4, 4, 4, 3, 6, 6, 6, 3],
    "d": [2, 2, 3, 4, 3],
    "r": 192,
}


def test_space_has_25_resolutions():
    assert RESOLUTIONS[0] == 128 and RESOLUTIONS[-1] == 224 and len(RESOLUTIONS) == 25


def test_reads_official_variants():
    a = Arch.from_dict(TUTORIAL)
    assert Arch.from_dict({**TUTORIAL, "r": [192], "wid": None}) == a
    variant = {k: v for k, v in TUTORIAL.items() if k != "r"}
    assert Arch.from_dict({**variant, "image_size": 192}) == a
    assert Arch.from_dict({**TUTORIAL, "accuracy": 0.8, "width_mult": 1.2}) == a
    assert a.to_official_dict()["r"] == [192]
    assert Arch.from_dict(a.to_dict()) == a


def test_canonical_ignores_inactive_slots():
    a = Arch.from_dict(TUTORIAL)
    ks = list(TUTORIAL["ks"])
    ks[3] = 7  # stage 0 has depth 2: slot 3 is inactive
    b = Arch.from_dict({**TUTORIAL, "ks": ks})
    assert a == b and hash(a) == hash(b) and a.stable_hash() == b.stable_hash()
    assert a.ks != b.ks  # the raw genes stay as given
    ks[1] = 7  # slot 1 is active
    c = Arch.from_dict({**TUTORIAL, "ks": ks})
    assert c != a and c.stable_hash() != a.stable_hash()


def test_stable_hash_is_fixed_across_versions():
    # A literal: if the canonical form or hashing ever changes, stored hashes would break.
    assert Arch.from_dict(TUTORIAL).stable_hash() == "d94f8f0f043ee2ea"


def test_active_blocks():
    a = Arch.from_dict(TUTORIAL)
    assert a.active_blocks() == [0, 1, 4, 5, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"ks": [3] * 19}, "ks", "20 entries"),
        ({"ks": [3] * 19 + [4]}, "ks", "allowed values are [3, 5, 7]"),
        ({"ks": [3] * 19 + ["3"]}, "ks", "must be an integer"),
        ({"ks": [3] * 19 + [3.0]}, "ks", "must be an integer"),
        ({"ks": "3" * 20}, "ks", "must be a list"),
        ({"e": [3] * 21}, "e", "20 entries"),
        ({"e": [3] * 19 + [5]}, "e", "allowed values are [3, 4, 6]"),
        ({"e": [True] * 20}, "e", "must be an integer"),
        ({"d": [2, 2, 2, 2]}, "d", "5 entries"),
        ({"d": [2, 2, 2, 2, 5]}, "d", "allowed values are [2, 3, 4]"),
        ({"d": [2, 2, 2, 2, None]}, "d", "must be an integer"),
        ({"r": 130}, "r", "128..224 in steps of 4"),
        ({"r": 232}, "r", "128..224"),
        ({"r": "192"}, "r", "integer resolution"),
        ({"r": [160, 192]}, "r", "exactly one"),
        ({"wid": 1}, "wid", "must be null"),
    ],
)
def test_invalid_fields_name_the_field(change, field, words):
    with pytest.raises(InvalidArchError) as info:
        Arch.from_dict({**TUTORIAL, **change}, source="x.json")
    message = str(info.value)
    assert f"'{field}'" in message and words in message and "\n" not in message


@pytest.mark.parametrize("missing", ["ks", "e", "d", "r"])
def test_missing_keys(missing):
    with pytest.raises(InvalidArchError, match=f"'{missing}' is missing"):
        Arch.from_dict({k: v for k, v in TUTORIAL.items() if k != missing})


def test_file_errors(tmp_path):
    with pytest.raises(BadInputError, match="no such arch file"):
        load_arch_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidArchError, match="not valid JSON"):
        load_arch_file(bad)
    notobj = tmp_path / "list.json"
    notobj.write_text("[1, 2]")
    with pytest.raises(InvalidArchError, match="JSON object"):
        load_arch_file(notobj)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(TUTORIAL))
    arch, data = load_arch_file(good)
    assert arch.r == 192 and data["d"] == TUTORIAL["d"]


def test_sampling_is_seeded_and_valid():
    a = sample_batch(np.random.default_rng(3), 500, resolutions=(160, 224))
    b = sample_batch(np.random.default_rng(3), 500, resolutions=(160, 224))
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("ks", "e", "d", "r"))
    assert set(a.r.tolist()) == {160, 224}
    archs = a.to_archs()  # constructing validates every gene
    assert len(archs) == 500
    # every choice shows up: the sampler is not stuck on a subset
    assert set(a.ks.ravel().tolist()) == {3, 5, 7} and set(a.d.ravel().tolist()) == {2, 3, 4}
    assert isinstance(sample_arch(np.random.default_rng(0)), Arch)


def test_mutation_rate_and_validity():
    rng = np.random.default_rng(0)
    base = sample_batch(rng, 2000)
    mutated = mutate_batch(base, rng, prob=0.1)
    changed = np.mean(mutated.ks != base.ks)
    # a resampled slot keeps its old value 1/3 of the time: expected change rate 0.1 * 2/3
    assert 0.055 < changed < 0.08
    assert np.array_equal(mutate_batch(base, rng, prob=0.0).ks, base.ks)
    mutated.to_archs()
    a = base.to_archs()[0]
    assert isinstance(mutate_arch(a, rng, prob=1.0), Arch)


def test_crossover_takes_genes_from_parents():
    rng = np.random.default_rng(1)
    a, b = sample_batch(rng, 300), sample_batch(rng, 300)
    child = crossover_batch(a, b, rng)
    assert np.all((child.ks == a.ks) | (child.ks == b.ks))
    assert np.all((child.r == a.r) | (child.r == b.r))
    assert 0.3 < np.mean(child.e == a.e) < 0.9
    x, y = a.to_archs()[0], b.to_archs()[0]
    assert isinstance(crossover_arch(x, y, rng), Arch)


def test_batch_round_trip_and_unique():
    rng = np.random.default_rng(2)
    batch = sample_batch(rng, 50)
    again = ArchBatch.from_archs(batch.to_archs())
    assert np.array_equal(again.ks, batch.ks) and np.array_equal(again.r, batch.r)
    doubled = batch.concat(batch)
    assert len(doubled.unique_rows()) == 50
    mask = batch.active_mask()
    assert mask.shape == (50, N_BLOCKS)
    assert np.array_equal(mask.reshape(50, 5, 4).sum(axis=2), batch.d)
    assert batch[np.array([0, 2])].to_archs() == [batch.to_archs()[0], batch.to_archs()[2]]
