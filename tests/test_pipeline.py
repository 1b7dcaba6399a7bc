"""The input pipeline: stable example indices, weighted sampling, resume, sharding, PrepareSource."""

import threading
import time

import grain
import ml_collections
import numpy as np
import pytest

from multimodal_jax.data import pipeline
from multimodal_jax.data import toy_scenes

NUM_TRAIN = 64  # toy_scenes/tiny and digits_completion/tiny.


def data_config(data_dir, name="toy_scenes", seed=0, batch_size=8):
  return ml_collections.ConfigDict({
      "seed": seed,
      "data": {"name": name, "builder_config": "tiny", "data_dir": data_dir,
               "batch_size": batch_size, "num_workers": 0, "options": {}},
  })


def take(iterator, num_batches):
  return [next(iterator) for _ in range(num_batches)]


def indices_of(batches):
  return np.concatenate([b["index"] for b in batches])


def assert_batches_equal(expected, actual):
  assert len(expected) == len(actual)
  for e, a in zip(expected, actual):
    assert e.keys() == a.keys()
    for key in e:
      np.testing.assert_array_equal(e[key], a[key], err_msg=key)


@pytest.fixture(scope="module")
def toy_records(data_dir):
  source = pipeline.get_builder(data_config(data_dir).data).as_data_source("train")
  return [source[i] for i in range(len(source))]


# ---------------------------------------------------------------- the stable index


def test_train_examples_carry_the_index_of_their_record(data_dir, toy_records):
  batches = take(pipeline.create_train_iterator(data_config(data_dir)), 10)  # 80 > 64: two epochs.
  for batch in batches:
    assert batch["index"].dtype == np.int32 and batch["index"].shape == (8,)
    for label, index in zip(batch["label"], batch["index"]):
      assert 0 <= index < NUM_TRAIN
      np.testing.assert_array_equal(label, toy_records[index]["label"])  # Layouts are unique.
  # A shuffled epoch visits every record once.
  assert sorted(indices_of(batches)[:NUM_TRAIN]) == list(range(NUM_TRAIN))


def test_unweighted_order_is_grains_index_sampler(data_dir, toy_records):
  """weights=None keeps the shuffle the loop had before the index existed."""
  config = data_config(data_dir, seed=3)
  source = pipeline.get_builder(config.data).as_data_source("train")
  # tfds stores records in a hashed order: the position is not the generator's key.
  position_of = {int(r["layout_id"]): i for i, r in enumerate(toy_records)}
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=grain.sharding.ShardByJaxProcess(drop_remainder=True),
      shuffle=True, num_epochs=None, seed=3)
  plain = grain.DataLoader(data_source=source, sampler=sampler, worker_count=0)
  expected = [position_of[int(r["layout_id"])] for r, _ in zip(plain, range(80))]
  assert list(indices_of(take(pipeline.create_train_iterator(config), 10))) == expected


def test_eval_examples_carry_their_index(data_dir):
  batch = pipeline.load_eval_examples(data_config(data_dir), 5)
  np.testing.assert_array_equal(batch["index"], np.arange(5, dtype=np.int32))
  assert batch["index"].dtype == np.int32
  test = pipeline.get_builder(data_config(data_dir).data).as_data_source("test")
  for label, index in zip(batch["label"], batch["index"]):
    np.testing.assert_array_equal(label, test[index]["label"])


class AddOne(grain.transforms.Map):

  def map(self, element):
    assert pipeline.INDEX_KEY not in element  # Datasets see their records unchanged.
    return {"v": element["v"] + 1}


class AddNoise(grain.transforms.RandomMap):

  def random_map(self, element, rng):
    return {"v": element["v"], "draw": rng.integers(2**62)}


class KeepEven(grain.transforms.Filter):

  def filter(self, element):
    return element["index"] % 2 == 0


class Duplicate(grain.experimental.FlatMapTransform):
  max_fan_out = 2

  def flat_map(self, element):
    return [element, element]


def test_index_passes_through_map_random_map_and_filter():
  source = pipeline.IndexedSource([{"v": np.int64(10 * k)} for k in range(6)])
  assert source[4] == {"v": 40, "index": 4} and source[4]["index"].dtype == np.int32
  keep_even = KeepEven()
  add_one, kept, add_noise = pipeline.pass_index_through([AddOne(), keep_even, AddNoise()])
  assert kept is keep_even  # A Filter passes elements on as they are.
  assert add_one.map(source[2]) == {"v": 21, "index": 2}
  out = add_noise.random_map({"v": 7, "index": np.int32(5)}, np.random.default_rng(0))
  assert out["index"] == 5 and out["draw"] == np.random.default_rng(0).integers(2**62)
  # Through a DataLoader: the filter sees the index-carrying element, the batch keeps it.
  loader = grain.DataLoader(
      data_source=source, sampler=grain.samplers.IndexSampler(6, num_epochs=1, seed=0),
      operations=[add_one, kept, add_noise, grain.transforms.Batch(3)], worker_count=0)
  (batch,) = list(loader)
  np.testing.assert_array_equal(batch["index"], [0, 2, 4])
  np.testing.assert_array_equal(batch["v"], [1, 21, 41])


def test_transforms_that_would_drop_the_index_are_refused():
  with pytest.raises(TypeError, match="would drop the 'index' key"):
    pipeline.pass_index_through([AddOne(), Duplicate()])

  class ToTuple(grain.transforms.Map):

    def map(self, element):
      return (element["v"],)

  with pytest.raises(TypeError, match="not a dict"):
    pipeline.pass_index_through([ToTuple()])[0].map({"v": 1, "index": np.int32(0)})
  with pytest.raises(ValueError, match="already has a 'index' field"):
    pipeline.IndexedSource([{"index": 3}])[0]  # pylint: disable=expression-not-assigned


# ---------------------------------------------------------------- weighted sampling


def test_weighted_frequencies_match_the_weights():
  weights = np.array([0.0, 0.02, 1.0, 3.0, 0.0, 5.0, 0.5, 10.0])
  num_draws = 400_000
  sampler = pipeline.WeightedSampler(weights, seed=7)
  counts = np.bincount(sampler.record_keys(0, num_draws), minlength=len(weights))
  assert counts.sum() == num_draws and len(counts) == len(weights)
  assert counts[0] == counts[4] == 0  # Zero weight: never drawn.
  p = weights / weights.sum()
  binomial_std = np.sqrt(num_draws * p * (1 - p))
  np.testing.assert_array_less(np.abs(counts - num_draws * p), 5 * binomial_std + 1e-9)
  assert counts[1] > 0  # The small weight (expected ~490 draws) is drawn.


def test_weighted_sampler_follows_grains_sampler_protocol():
  sampler = pipeline.WeightedSampler(np.arange(1.0, 11.0), seed=5, block_size=16)
  keys = sampler.record_keys(0, 100)
  for i in [0, 1, 15, 16, 17, 50, 99, 3, 40]:  # Across blocks, and back (the block cache).
    metadata = sampler[i]
    assert isinstance(metadata, grain.RecordMetadata)
    assert metadata.index == i and metadata.record_key == keys[i]
    # The rng IndexSampler gives position i, so RandomMaps stay deterministic.
    assert metadata.rng.integers(2**62) == np.random.Generator(np.random.Philox(key=5 + i)).integers(2**62)
  np.testing.assert_array_equal(sampler.record_keys(37, 70), keys[37:70])
  assert len(sampler) > 2**62  # Infinite.
  with pytest.raises(IndexError):
    sampler[-1]  # pylint: disable=pointless-statement


def test_weighted_draws_are_a_function_of_seed_and_position():
  weights = np.ones(50)
  a = pipeline.WeightedSampler(weights, seed=1).record_keys(0, 10_000)
  np.testing.assert_array_equal(a, pipeline.WeightedSampler(weights, seed=1).record_keys(0, 10_000))
  assert (a != pipeline.WeightedSampler(weights, seed=2).record_keys(0, 10_000)).mean() > 0.9
  # Uniform weights draw with replacement: repeats within one pass of 50.
  assert len(set(a[:50])) < 50


def test_weighted_iterator_draws_only_weighted_records(data_dir, toy_records):
  weights = np.zeros(NUM_TRAIN)
  weights[[5, 17, 40]] = [1.0, 2.0, 5.0]
  batches = take(pipeline.create_train_iterator(data_config(data_dir), weights), 50)
  indices = indices_of(batches)
  assert set(indices) == {5, 17, 40}
  counts = np.array([np.sum(indices == k) for k in (5, 17, 40)])
  # 400 draws with p = 1/8, 2/8, 5/8: binomial std <= 10.
  np.testing.assert_array_less(np.abs(counts - 400 * np.array([1, 2, 5]) / 8), 40)
  for batch in batches[:5]:
    for label, index in zip(batch["label"], batch["index"]):
      np.testing.assert_array_equal(label, toy_records[index]["label"])


def test_weighted_iterator_is_deterministic_per_seed(data_dir):
  weights = np.linspace(0.0, 1.0, NUM_TRAIN)
  first = indices_of(take(pipeline.create_train_iterator(data_config(data_dir, seed=4), weights), 6))
  again = indices_of(take(pipeline.create_train_iterator(data_config(data_dir, seed=4), weights), 6))
  other = indices_of(take(pipeline.create_train_iterator(data_config(data_dir, seed=5), weights), 6))
  np.testing.assert_array_equal(first, again)
  assert (first != other).mean() > 0.5
  assert 0 not in first  # Weight 0.


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", ["toy_scenes", "digits_completion"])
def test_resume_mid_epoch_replays_the_same_batches(data_dir, name, weighted):
  # digits_completion's RandomMap corrupts and masks from grain's per-record rng.
  weights = np.arange(NUM_TRAIN, dtype=np.float64) % 7 if weighted else None
  config = data_config(data_dir, name=name, batch_size=6)
  iterator = pipeline.create_train_iterator(config, weights)
  take(iterator, 3)
  state = iterator.get_state()
  expected = take(iterator, 14)  # Crosses the end of the first epoch (64 / 6 batches).
  resumed = pipeline.create_train_iterator(config, weights)
  resumed.set_state(state)
  assert_batches_equal(expected, take(resumed, 14))
  # A fresh iterator is elsewhere: the state did the work.
  assert not np.array_equal(indices_of(take(pipeline.create_train_iterator(config, weights), 3)),
                            indices_of(expected[:3]))


def test_resume_with_other_weights_fails(data_dir):
  config = data_config(data_dir)
  iterator = pipeline.create_train_iterator(config, np.ones(NUM_TRAIN))
  take(iterator, 1)
  other = pipeline.create_train_iterator(config, np.arange(NUM_TRAIN, dtype=np.float64))
  with pytest.raises(ValueError, match="Sampler in checkpoint does not match"):
    other.set_state(iterator.get_state())


def test_two_shards_split_the_positions_of_the_unsharded_sequence():
  source = pipeline.IndexedSource([{"v": np.int64(k)} for k in range(20)])
  weights = np.arange(20.0) % 4
  seed, num_positions = 9, 200
  position_of_draw = {np.random.Generator(np.random.Philox(key=seed + i)).integers(2**62): i
                      for i in range(num_positions)}

  def read(shard_options, num_examples):
    sampler = pipeline.WeightedSampler(weights, shard_options, seed=seed, block_size=32)
    loader = grain.DataLoader(data_source=source, sampler=sampler,
                              operations=pipeline.pass_index_through([AddNoise()]), worker_count=0)
    examples = [e for e, _ in zip(loader, range(num_examples))]
    return [position_of_draw[e["draw"]] for e in examples], [int(e["index"]) for e in examples]

  positions, indices = read(grain.sharding.NoSharding(), num_positions)
  assert positions == list(range(num_positions))
  shards = [read(grain.sharding.ShardOptions(p, 2, drop_remainder=True), num_positions // 2)
            for p in range(2)]
  for p, (shard_positions, shard_indices) in enumerate(shards):
    assert shard_positions == list(range(p, num_positions, 2))
    assert shard_indices == indices[p::2]
  assert not set(shards[0][0]) & set(shards[1][0])


@pytest.mark.parametrize("weights,message", [
    (np.ones((4, 16)), "non-empty 1-D array"),
    (np.zeros(0), "non-empty 1-D array"),
    (np.array([1.0, np.nan, 2.0]), "must be finite; 1 are not \\(entry 1 is nan\\)"),
    (np.array([1.0, np.inf]), "must be finite"),
    (np.array([1.0, -0.5, 2.0]), "must be >= 0; 1 are negative \\(entry 1 is -0.5\\)"),
    (np.zeros(5), "positive sum; all 5 are 0"),
])
def test_bad_weights_give_one_line_errors(weights, message):
  with pytest.raises(ValueError, match=message) as error:
    pipeline.WeightedSampler(weights)
  assert "\n" not in str(error.value)


def test_weights_of_the_wrong_length_are_refused(data_dir):
  with pytest.raises(ValueError, match=r"shape \(63,\), but the 'train' split of 'toy_scenes' "
                     r"has 64 records") as error:
    pipeline.create_train_iterator(data_config(data_dir), np.ones(NUM_TRAIN - 1))
  assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match="must be >= 0"):
    pipeline.create_train_iterator(data_config(data_dir), -np.ones(NUM_TRAIN))


# ---------------------------------------------------------------- PrepareSource


def test_prepare_source_reads_every_example_once_in_order(data_dir, toy_records, capsys):
  source = pipeline.PrepareSource(data_config(data_dir))
  assert len(source) == NUM_TRAIN
  example = source[17]
  assert example["index"] == 17 and example["index"].dtype == np.int32
  np.testing.assert_array_equal(example["label"], toy_records[17]["label"])
  np.testing.assert_array_equal(example["x"].argmax(-1), toy_records[17]["label"])
  with pytest.raises(IndexError):
    source[NUM_TRAIN]  # pylint: disable=pointless-statement

  batches = list(source.batches(10, description="Colour statistics"))
  assert [len(b["index"]) for b in batches] == [10] * 6 + [4]
  np.testing.assert_array_equal(indices_of(batches), np.arange(NUM_TRAIN))
  np.testing.assert_array_equal(batches[1]["y"][7], source[17]["y"])
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1  # Fast: only the final line.
  assert out[0].startswith(f"Colour statistics: {NUM_TRAIN}/{NUM_TRAIN} examples (")
  assert out[0].endswith("/s)")

  list(source.batches(16, description="Every batch", progress_every_secs=0.0))
  out = capsys.readouterr().out.strip().splitlines()
  assert [line.split(" examples")[0] for line in out] == [
      f"Every batch: {n}/{NUM_TRAIN}" for n in (16, 32, 48, 64)]


def test_prepare_source_matches_the_train_iterator(data_dir):
  """What `prepare` computes for index i belongs to the example the loop tags i."""
  config = data_config(data_dir)
  source = pipeline.PrepareSource(config)
  for batch in take(pipeline.create_train_iterator(config), 3):
    for i, index in enumerate(batch["index"]):
      example = source[index]
      for key in ("x", "y", "mode"):
        np.testing.assert_array_equal(batch[key][i], example[key])


def test_prepare_source_uses_the_deterministic_transforms(data_dir):
  source = pipeline.PrepareSource(data_config(data_dir, name="digits_completion"))
  first = source[3]
  assert first["corrupted"] == 0  # No training corruption.
  again = next(source.batches(8))
  for key in first:
    np.testing.assert_array_equal(again[key][3], first[key])


def test_runs_started_together_build_a_local_dataset_once(tmp_path, monkeypatch):
  # Two runs on one fresh data_dir used to both generate it; the second's
  # rename of its incomplete.* directory raised FileExistsError.
  original = toy_scenes.ToyScenes.download_and_prepare
  builds = []

  def slow_prepare(self, *args, **kwargs):
    builds.append(threading.get_ident())
    time.sleep(0.5)  # both runs are past their `is_prepared` check before either finishes
    return original(self, *args, **kwargs)

  monkeypatch.setattr(toy_scenes.ToyScenes, "download_and_prepare", slow_prepare)
  data = ml_collections.ConfigDict({"name": "toy_scenes", "builder_config": "tiny", "data_dir": str(tmp_path)})
  results, errors = [], []

  def run():
    try:
      results.append(pipeline.get_builder(data))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=run) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  assert len(builds) == 1
  assert len(results) == 2
  assert all(b.is_prepared() and len(b.as_data_source("train")) == 64 for b in results)
