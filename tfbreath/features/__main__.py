"""``python -m tfbreath.features``: the in-graph features of WAV files, to one ``.npz``.

    python -m tfbreath.features WAV_OR_DIR... --out FILE.npz [--pipeline pipelines/x.toml]

Writes one array per map name ``[N, n_mels, frames]``, ``scalars [N, 39]`` and ``files [N]`` of the
files that decoded, to exactly ``FILE.npz`` (atomically: an interrupted run leaves no partial file).
Files that cannot be read or decoded are skipped, counted and reported on stderr.
Exit code: 0 every file written; 1 some skipped (all skipped: ``error: no file could be decoded``,
nothing written); 2 bad arguments, pipeline, inputs or output (one ``error: ...`` line).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from tfbreath import artifacts, data
from tfbreath.config import SCALARS, SPECTRAL, PipelineConfig, load_config
from tfbreath.console import OneLineParser, add_verbose_argument
from tfbreath.errors import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, TfbreathError, print_error


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m tfbreath.features",
        description="Compute the pipeline's spectral maps and scalars for WAV files, in-graph.")
    parser.add_argument("inputs", nargs="+", help="WAV files or folders of WAV files")
    parser.add_argument("--out", required=True, help="output .npz file")
    parser.add_argument("--pipeline", help="pipeline TOML (default: the embedded breath-phase recipe)")
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    out_path = Path(args.out)
    try:
        pipeline = load_config(args.pipeline) if args.pipeline else PipelineConfig()
        files = data.collect_wav_files(args.inputs)
        artifacts.check_writable(out_path)  # before the extraction, not after it
    except TfbreathError as err:
        return print_error(err)
    feature_set = data.extract(files, None, pipeline, description="features")
    print(feature_set.report, file=sys.stderr)
    report = feature_set.report
    if len(report.skipped) == report.total:
        print(f"error: no file could be decoded ({report.total} skipped); nothing written", file=sys.stderr)
        return EXIT_SKIPPED
    arrays = feature_set.to_numpy()
    out = {name: arrays[SPECTRAL][..., channel] for channel, name in enumerate(pipeline.features.maps)}
    if SCALARS in arrays:
        out[SCALARS] = arrays[SCALARS]
    out["files"] = np.array([str(p) for p in arrays["files"]])
    npz = io.BytesIO()
    np.savez(npz, **out)  # to a buffer: np.savez would add ".npz" to a name without it
    try:
        artifacts.write_bytes(out_path, npz.getvalue())
    except OSError as err:
        print(f"error: {out_path}: cannot be written ({err.strerror})", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {len(out['files'])} file(s) to {out_path}", file=sys.stderr)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
