"""Samples per second of four ways to feed forecasting windows to Keras, side by side.

- `tuner`: `tuner.data.forecast.dataset`, a `keras.utils.PyDataset` that gathers a whole batch
  of windows with one numpy fancy index (every Keras backend reads it);
- `tf.data`: what `tuner` used before the JAX backend, a tf.data pipeline that gathers a whole
  batch of windows with one `tf.gather`;
- `keras`: `keras.utils.timeseries_dataset_from_array`, which yields the same windows (a test
  holds them side by side);
- `generator`: the Python generator of *Deep Learning with Python* (1st edition, section 6.3),
  which fills each batch window by window with numpy.

Each is timed over the same training windows (shuffled, as in training), `--batches` batches a
run, in `--repeats` rounds that take them in turn, so that they share whatever else the
machine is doing; the table shows medians. `--fit` also times one epoch of `model.fit` on each
(a GRU(32), the seed configuration), which is what a trial feels, on the Keras backend
`KERAS_BACKEND` names.

Usage:
    python benchmarks/windows.py [--dataset nyc-weather] [--batches 200] [--repeats 7] [--fit]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One compute thread, as a worker pinned to one core has (`tuner run --workers 2` on 2 cores).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402

from tuner.config import DataConfig  # noqa: E402
from tuner.data import forecast, load_frame  # noqa: E402


def generator(
    data: np.ndarray,
    target: np.ndarray,
    lookback: int,
    delay: int,
    min_index: int,
    max_index: int,
    shuffle: bool = False,
    batch_size: int = 128,
    step: int = 6,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The book's generator as printed, but for the target, passed as its own array (the book
    reads column 1 of `data`). Its windows end one step earlier than ours, which changes
    nothing for speed."""
    i = min_index + lookback
    while True:
        if shuffle:
            rows = np.random.randint(min_index + lookback, max_index, size=batch_size)
        else:
            if i + batch_size >= max_index:
                i = min_index + lookback
            rows = np.arange(i, min(i + batch_size, max_index))
            i += len(rows)
        samples = np.zeros((len(rows), lookback // step, data.shape[-1]))
        targets = np.zeros((len(rows),))
        for j, _row in enumerate(rows):
            indices = range(rows[j] - lookback, rows[j], step)
            samples[j] = data[indices]
            targets[j] = target[rows[j] + delay]
        yield samples, targets


def pipelines(arrays: forecast.ForecastArrays, batch_size: int) -> dict[str, Callable[[], object]]:
    """Each way, as a function that returns a fresh, endless iterable of (windows, targets)
    batches: the two tf.data pipelines repeat (reshuffling every epoch), the generator never
    stops."""
    import keras

    start, stop = arrays.rows("train")
    lookback = arrays.timesteps * arrays.step
    offset = (arrays.timesteps - 1) * arrays.step + arrays.delay

    def ours() -> object:
        return forecast.dataset(arrays, "train", batch_size, shuffle=True, seed=0).repeat()

    def tf_data() -> object:
        import tensorflow as tf

        ends = arrays.window_ends("train")
        offsets = tf.constant(np.arange(-(arrays.timesteps - 1), 1) * arrays.step, tf.int64)
        inputs, target = tf.constant(arrays.inputs), tf.constant(arrays.target)

        def windows(end: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return (
                tf.gather(inputs, end[:, None] + offsets[None, :]),
                tf.gather(target, end + arrays.delay),
            )

        ds = tf.data.Dataset.from_tensor_slices(ends)
        ds = ds.shuffle(len(ends), seed=0, reshuffle_each_iteration=True)
        return ds.batch(batch_size).map(windows).prefetch(tf.data.AUTOTUNE).repeat()

    def theirs() -> object:
        return keras.utils.timeseries_dataset_from_array(
            arrays.inputs[start : stop - arrays.delay],
            arrays.target[start + offset : stop],
            sequence_length=arrays.timesteps,
            sampling_rate=arrays.step,
            batch_size=batch_size,
            shuffle=True,
            seed=0,
        ).repeat()

    def book() -> object:
        return generator(
            arrays.inputs,
            arrays.target,
            lookback=lookback,
            delay=arrays.delay,
            min_index=start,
            max_index=stop - arrays.delay - 1,
            shuffle=True,
            batch_size=batch_size,
            step=arrays.step,
        )

    return {"tuner": ours, "tf.data": tf_data, "keras": theirs, "generator": book}


def throughput(make: Callable[[], object], batches: int, batch_size: int) -> float:
    """Samples per second of taking `batches` batches, after one batch of warm-up."""
    iterator = iter(make())  # type: ignore[call-overload]
    next(iterator)
    began = time.perf_counter()
    for _ in range(batches):
        x, _y = next(iterator)
        np.asarray(x)  # a tf.Tensor is computed by now; make sure of it
    return batches * batch_size / (time.perf_counter() - began)


def fit_throughput(
    make: Callable[[], object], arrays: forecast.ForecastArrays, batches: int, batch_size: int
) -> float:
    """Samples per second of one `model.fit` epoch of `batches` steps of GRU(32)."""
    import keras

    from tuner.search.space import SEED_CONFIGS
    from tuner.training.model import build_model
    from tuner.training.spec import spec_from_params

    keras.backend.clear_session()
    spec = spec_from_params(SEED_CONFIGS[0].params)
    model = build_model(spec, arrays.model_inputs, arrays.head)
    data = make()
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # trace, warm up
    began = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=batches, verbose=0)
    return batches * batch_size / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="nyc-weather")
    parser.add_argument("--target", default="temp")
    parser.add_argument("--lookback", type=int, default=120)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--delay", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fit", action="store_true", help="also time model.fit on each")
    parser.add_argument("--only", help="the ways to time, comma-separated (e.g. tuner,tf.data)")
    parser.add_argument("--no-pipeline", action="store_true", help="time model.fit only")
    args = parser.parse_args()

    config = DataConfig(
        task="forecast",
        dataset=args.dataset,
        path=None,
        target=args.target,
        lookback=args.lookback,
        step=args.step,
        delay=args.delay,
    )
    frame, source = load_frame(config)
    arrays = forecast.prepare(config, frame, source)
    ways = pipelines(arrays, args.batch_size)
    if args.only:
        ways = {name: way for name, way in ways.items() if name in args.only.split(",")}
    print(
        f"{args.dataset}: {len(arrays.window_ends('train'))} training windows of "
        f"{arrays.timesteps} steps x {len(arrays.features)} features, batch {args.batch_size}, "
        f"{args.batches} batches a run, {args.repeats} rounds"
    )
    measures = {} if args.no_pipeline else {"pipeline": throughput}
    if args.fit:
        measures["fit"] = lambda make, batches, size: fit_throughput(make, arrays, batches, size)
    for what, measure in measures.items():
        runs: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, make in ways.items():
                runs[name].append(measure(make, args.batches, args.batch_size))
        reference = "generator" if "generator" in runs else next(iter(runs))
        base = statistics.median(runs[reference])
        print(f"\n{what}: samples/s (median of {args.repeats}), and vs {reference}")
        for name, values in runs.items():
            median = statistics.median(values)
            spread = f"{min(values):,.0f}..{max(values):,.0f}"
            print(f"  {name:<10} {median:>12,.0f}   x{median / base:5.2f}   ({spread})")


if __name__ == "__main__":
    main()
