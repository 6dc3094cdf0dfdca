"""``sansa-gpu``: fit a model from an interaction file, write every user's top-k, evaluate a split.

    sansa-gpu fit interactions.parquet -o model.npz --user-col user --item-col item
    sansa-gpu recommend model.npz interactions.parquet -o top20.parquet --k 20
    sansa-gpu recommend model.npz interactions/ -o top20/ --scheduler tcp://HOST:8786   # or --workers 4
    sansa-gpu evaluate model.npz --train train.csv --test test.csv -o metrics.json
    sansa-gpu evaluate model.npz --split ../shared/data/gowalla      # any ../shared/data folder (data.load_split)
    sansa-gpu tune interactions.parquet -o model.npz --max-model-bytes 200e6 --trials trials.jsonl --plot tune.png

Input files are CSV / TSV (by extension, or --delimiter) or Parquet, with one (user, item[, value])
interaction per row; IDs may be integers or strings. Errors are reported in one line, exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from . import __version__
from .defaults import (
    DEFAULT_L2,
    DEFAULT_MIN_COOCCURRENCE,
    DEFAULT_NNZ_PER_ITEM,
    DEFAULT_REFINE_SWEEPS,
    DENSE_DATA_ITEMS_PER_USER,
    DENSE_NNZ_PER_ITEM,
    DENSE_REFINE_SWEEPS,
    DEVICES,
    FACTORIZERS,
    L2_PER_MEAN_DIAGONAL,
    TUNE_L2_GRID,
    TUNE_MIN_COOCCURRENCE,
)

logger = logging.getLogger("sansa_gpu.cli")


def _add_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user-col", default="user_id", help="user ID column (default: user_id)")
    p.add_argument("--item-col", default="item_id", help="item ID column (default: item_id)")
    p.add_argument("--value-col", default=None, help="interaction weight column (default: every row counts 1)")
    p.add_argument("--delimiter", default=None, help="CSV delimiter (default: ',' or tab for .tsv)")


def _one_line(message) -> str:
    """``message`` with its line breaks (pyarrow's messages have some) folded into spaces."""
    return " ".join(str(message).split())


class _Parser(argparse.ArgumentParser):
    """argparse reporting a usage error like every other error: one line ``<prog>: error: ...``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _check_device(device: str | None) -> None:
    """``--device gpu`` on a machine where no GPU answers: a ValueError before any work (the API
    raises RuntimeError for it, from deep inside fit / load)."""
    if device != "gpu":
        return
    from .backend import resolve_device

    try:
        resolve_device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device gpu: {exc}") from exc


def _gram_cap(text: str):
    """--max-gram-per-item: 'auto', 'none' or a positive integer."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _check_output(path: str) -> None:
    """Fail before any work when ``path`` cannot be written: its folder must exist and take a new
    file (probed with a temporary file, as the atomic writer will make), and it must not be a folder."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if not os.path.exists(directory):
        raise FileNotFoundError(f"output folder {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"output folder {directory!r} is not a folder")
    if os.path.isdir(path):
        raise IsADirectoryError(f"output {path!r} is a folder, not a file name")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp-", suffix=".probe", dir=directory)
    except OSError as exc:
        raise OSError(f"cannot write in output folder {directory!r}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def _writing(path: str):
    """An OSError while writing ``path`` (disk full, ...) becomes one that names the file."""
    try:
        yield
    except OSError as exc:
        raise OSError(f"cannot write {path!r}: {exc.strerror or exc}") from exc


def _read(path: str, args):
    from .ids import read_table

    cols = [args.user_col, args.item_col] + ([args.value_col] if args.value_col else [])
    return read_table(path, cols, args.delimiter)


def _cmd_fit(args) -> int:
    from .model import SANSA

    _check_output(args.output)
    _check_device(args.device)
    t0 = time.perf_counter()
    table = _read(args.input, args)
    logger.info("read %d interactions from %s (%.1fs)", table.num_rows, args.input, time.perf_counter() - t0)
    model = SANSA(l2=args.l2, density=args.density, factorizer=args.factorizer, refine_sweeps=args.refine_sweeps,
                  device=args.device, ordering=args.ordering, min_cooccurrence=args.min_cooccurrence,
                  max_gram_per_item=args.max_gram_per_item,
                  **({"refine_tol": args.refine_tol} if args.refine_tol is not None else {}))
    model.fit(table, check_memory=not args.no_memory_check, user_col=args.user_col, item_col=args.item_col,
              value_col=args.value_col)
    with _writing(args.output):
        model.save(args.output)
    summary = {"model": args.output, "n_items": model.n_items_, "model_nnz": model.model_nnz,
               "model_bytes": model.model_bytes, "fit_seconds": round(model.stats_["fit_seconds"], 3),
               "n_users": model.stats_["n_users"], "nnz_X": model.stats_["nnz_X"],
               # what the fit used, the defaults resolved from the data
               "factorizer": model.factorizer_, "l2": model.l2_, "density": model.density_,
               "refine_sweeps": model.refine_sweeps_, "min_cooccurrence": model.min_cooccurrence_,
               "icf_fill": model.icf_fill_, "icf_intermediate_fill": model.icf_intermediate_fill_}
    print(json.dumps(summary))
    return 0


def read_item_list(path: str, kind: str) -> np.ndarray:
    """Raw item IDs of ``--items`` / ``--exclude-items``: one per line of a text file (blank lines and
    lines starting with '#' skipped), as int64 when the model's item IDs are ints ('int'), else str."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(n, line.strip()) for n, line in enumerate(f, 1)]
    except OSError as exc:
        raise OSError(f"cannot read the item list {path!r}: {exc.strerror or exc}") from exc
    values = [(n, v) for n, v in lines if v and not v.startswith("#")]
    if not values:
        raise ValueError(f"the item list {path!r} holds no item IDs (one raw ID per line expected)")
    if kind != "int":
        return np.array([v for _, v in values], dtype=str)
    out = np.empty(len(values), dtype=np.int64)
    for a, (n, v) in enumerate(values):
        try:
            out[a] = int(v)
        except (ValueError, OverflowError):
            raise ValueError(f"{path}:{n}: {v!r} is not an integer item ID of 64 bits (the model's item IDs are "
                             f"integers)") from None
    return out


def _candidate_lists(args, kind: str) -> dict:
    """The filter keywords of the scoring functions from ``--items`` / ``--exclude-items`` /
    ``--include-seen``."""
    return {"items": None if args.items is None else read_item_list(args.items, kind),
            "filter_items": None if args.exclude_items is None else read_item_list(args.exclude_items, kind),
            "filter_already_liked_items": not args.include_seen}


def _cmd_recommend_distributed(args) -> int:
    """``recommend --scheduler ADDR`` / ``--workers N``: score on a Dask cluster into a Parquet folder."""
    if args.scheduler and args.workers is not None:
        args.parser.error("--scheduler and --workers exclude each other")
    if args.workers is not None and args.workers < 1:
        args.parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.format == "csv":
        raise ValueError("--scheduler / --workers write a Parquet folder; --format csv is not supported there")
    if args.workers is not None:  # on --scheduler the workers' devices count, checked by the workers
        _check_device(args.device)
    from .distributed import _dask, _model_header, preflight, restored_environ, score_partitioned

    _, _, distributed = _dask()
    lists = _candidate_lists(args, _model_header(args.model)["item_ids"])
    preflight(args.model, args.input, args.output, args.k, args.user_col, args.item_col, args.value_col,
              args.batch_size)  # bad input fails before a cluster is started
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's own INFO chatter
    with contextlib.ExitStack() as stack:
        stack.enter_context(restored_environ())  # a LocalCluster leaves OMP_NUM_THREADS=1 etc. behind
        if args.scheduler:
            try:
                client = stack.enter_context(distributed.Client(args.scheduler, timeout="30s"))
            except (OSError, TimeoutError) as exc:
                raise OSError(f"cannot connect to the Dask scheduler at {args.scheduler!r}: {exc}") from exc
        else:
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"))
            client = stack.enter_context(distributed.Client(cluster))
        try:
            out = score_partitioned(args.model, args.input, args.output, k=args.k, user_col=args.user_col,
                                    item_col=args.item_col, value_col=args.value_col, client=client,
                                    batch_size=args.batch_size, device=args.device or "auto",
                                    progress=not args.quiet, **lists)
        except RuntimeError as exc:  # a task failed with a non-standard error (e.g. KilledWorker)
            raise OSError(str(exc)) from exc
    print(json.dumps({**out, "seconds": round(out["seconds"], 3)}))
    return 0


def _cmd_recommend(args) -> int:
    from .model import SANSA
    from .serving import score_to_parquet

    if args.scheduler or args.workers is not None:
        return _cmd_recommend_distributed(args)
    _check_output(args.output)
    _check_device(args.device)
    model = SANSA.load(args.model, device=args.device)
    lists = _candidate_lists(args, model.item_ids_.kind if model.item_ids_ is not None else "int")
    table = _read(args.input, args)
    with _writing(args.output):
        out = score_to_parquet(model, table, args.output, k=args.k, batch_size=args.batch_size,
                               user_col=args.user_col, item_col=args.item_col, value_col=args.value_col,
                               format=args.format, progress=not args.quiet, **lists)
    print(json.dumps({**out, "seconds": round(out["seconds"], 3)}))
    return 0


def _split_matrices(model, directory: str):
    """(train, test) of a dataset folder read by :func:`sansa_gpu.data.load_split` (its published
    split, else a per-user 80/20 holdout with seed 0), columns in the model's item numbering. The
    split's item ids are raw IDs: a model fitted on a table of raw IDs maps them through its
    ``item_ids_`` (items it does not know are dropped with a warning, as for --train / --test); a
    model fitted on a matrix takes them as its column indices. Rows stay the split's users."""
    import numpy as np
    import pyarrow as pa

    from .data import load_split
    from .ids import IdMap

    split = load_split(directory)
    if split.kind == "holdout":
        logger.warning("%s has no published split: scoring its seeded 80/20 per-user holdout "
                       "(sansa_gpu.data.load_split); the numbers are only honest for a model fitted on that "
                       "holdout's train part, not on the whole file", directory)
    item_ids = getattr(model, "item_ids_", None)
    if item_ids is None:
        return split.train, split.test
    if item_ids.kind != "int":
        raise ValueError(f"the split in {directory!r} has integer item ids but the model's item IDs are strings: "
                         "evaluate it with --train / --test files of raw IDs")
    users = IdMap(np.arange(split.train.shape[0], dtype=np.int64))

    def encode(M):
        coo = M.tocoo()
        pairs = pa.table({"user_id": coo.row.astype(np.int64), "item_id": coo.col.astype(np.int64)})
        return model.encode(pairs, users=users).X

    return encode(split.train), encode(split.test)


def _cmd_evaluate(args) -> int:
    from .io import atomic_file
    from .metrics import evaluate
    from .model import SANSA

    if args.output:
        _check_output(args.output)
    _check_device(args.device)
    model = SANSA.load(args.model, device=args.device)
    if args.split:
        train, test = _split_matrices(model, args.split)
    else:
        if not (args.train and args.test):
            raise ValueError("evaluate needs --split DIR or both --train and --test files")
        import pyarrow as pa

        from .ids import IdMap

        tr, te = _read(args.train, args), _read(args.test, args)
        users = IdMap.from_values(pa.concat_arrays([tr.column(args.user_col).combine_chunks(),
                                                    te.column(args.user_col).combine_chunks()]), args.user_col)
        train = model.encode(tr, args.user_col, args.item_col, args.value_col, users=users).X
        test = model.encode(te, args.user_col, args.item_col, args.value_col, users=users).X
    users = (test.getnnz(axis=1) > 0).nonzero()[0]
    t0 = time.perf_counter()
    ids, _ = model.recommend(train[users], k=max(args.k))
    metrics = {k: round(float(v), 6) for k, v in evaluate(ids, test[users], ks=tuple(args.k)).items()}
    result = {"model": args.model, "eval_users": int(users.size), "recommend_seconds": round(time.perf_counter() - t0, 3),
              **metrics}
    text = json.dumps(result)
    if args.output:
        with _writing(args.output), atomic_file(args.output, ".json-part") as f:
            f.write((text + "\n").encode("utf-8"))
    print(text)
    return 0


def _cmd_tune(args) -> int:
    from .tuning import tune

    for path in [args.output] + [p for p in (args.trials, args.plot) if p]:
        _check_output(path)
    _check_device(args.device)
    table = _read(args.input, args)
    kw = {}
    for name in ("l2_grid", "densities", "min_cooccurrence", "factorizers"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    result = tune(table, k=args.k, metric=args.metric, validation=args.validation,
                  validation_fraction=args.validation_fraction, seed=args.seed, max_model_bytes=args.max_model_bytes,
                  max_memory=args.max_memory, max_seconds=args.max_seconds, device=args.device,
                  dense_ease=args.plot is not None and not args.no_dense_ease, progress=not args.quiet,
                  user_col=args.user_col, item_col=args.item_col, value_col=args.value_col, **kw)
    with _writing(args.output):
        result.model.save(args.output)
    if args.trials:
        with _writing(args.trials):
            result.to_jsonl(args.trials)
    if args.plot:
        with _writing(args.plot):
            result.plot(args.plot, title=os.path.basename(args.input))
    print(json.dumps({"model": args.output, **result.best_params, result.metric: result.best[result.metric],
                      "model_bytes": result.model.model_bytes, "trials": len(result.trials),
                      "search_seconds": result.seconds}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="sansa-gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"sansa_gpu {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit a SANSA model from an interaction file and save it")
    f.add_argument("input", help="interactions (.csv / .tsv / .parquet)")
    f.add_argument("-o", "--output", required=True, help="model file to write (.npz)")
    _add_columns(f)
    f.add_argument("--l2", type=float, default=None,
                   help=f"ridge lambda (default: {DEFAULT_L2:g} on the column-scaled Gram of ICF, "
                        f"{L2_PER_MEAN_DIAGONAL:g} x the mean item popularity on the unscaled Gram of CHOLMOD)")
    f.add_argument("--density", type=float, default=None,
                   help=f"weight density (default: {DEFAULT_NNZ_PER_ITEM} nonzeros per item column, i.e. "
                        f"{DEFAULT_NNZ_PER_ITEM} / n_items; {DENSE_NNZ_PER_ITEM} per item with at least "
                        f"{DENSE_DATA_ITEMS_PER_USER:g} interactions per user)")
    f.add_argument("--factorizer", choices=FACTORIZERS, default="auto",
                   help="default auto: the rule of sansa_gpu.factorize.choose_factorizer")
    f.add_argument("--ordering", default=None, help="item ordering (default: colamd for cholmod, popularity for icf)")
    f.add_argument("--refine-sweeps", type=int, default=None,
                   help=f"refinement sweeps (default: {DEFAULT_REFINE_SWEEPS}; {DENSE_REFINE_SWEEPS} with at least "
                        f"{DENSE_DATA_ITEMS_PER_USER:g} interactions per user)")
    f.add_argument("--refine-tol", type=float, default=None)
    f.add_argument("--min-cooccurrence", type=float, default=None,
                   help=f"ICF: drop Gram entries below this (default: {DEFAULT_MIN_COOCCURRENCE:g} for 0/1 data, "
                        f"i.e. pairs seen by one user only; 0 for weighted data)")
    f.add_argument("--max-gram-per-item", type=_gram_cap, default="auto", metavar="auto|none|N",
                   help="ICF: Gram entries kept per item column (default auto: 16 per factor nonzero; none: all)")
    f.add_argument("--device", choices=DEVICES, default="auto")
    f.add_argument("--no-memory-check", action="store_true", help="skip the peak-memory estimate before fitting")
    f.set_defaults(run=_cmd_fit)

    r = sub.add_parser("recommend", help="write every user's top-k (Parquet or CSV, long format)")
    r.add_argument("model")
    r.add_argument("input", help="interactions of the users to score (.csv / .tsv / .parquet)")
    r.add_argument("-o", "--output", required=True, help="output file (.parquet or .csv)")
    r.add_argument("--k", type=int, default=20)
    r.add_argument("--batch-size", type=int, default=None, help="users per block (bounds memory)")
    r.add_argument("--format", choices=("parquet", "csv"), default=None, help="default: from the output name")
    r.add_argument("--items", default=None, metavar="FILE",
                   help="recommend only these items: a text file with one raw item ID per line")
    r.add_argument("--exclude-items", default=None, metavar="FILE",
                   help="never recommend these items: a text file with one raw item ID per line")
    r.add_argument("--include-seen", action="store_true",
                   help="also recommend items the user already has (default: they are excluded)")
    r.add_argument("--device", choices=DEVICES, default=None)
    r.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="score on an existing Dask cluster (tcp://HOST:8786); INPUT is a Parquet folder or file, "
                        "OUTPUT a Parquet folder (needs sansa_gpu[distributed])")
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="score on a local Dask cluster of N worker processes (output as for --scheduler)")
    _add_columns(r)
    r.set_defaults(run=_cmd_recommend)

    e = sub.add_parser("evaluate", help="recall / nDCG of a model on a train/test split (JSON)")
    e.add_argument("model")
    e.add_argument("--split", default=None, help="dataset folder: train.txt / test.txt adjacency lists, *.train.rating / *.test.rating "
                   "pairs, or one unsplit file (users.dat, user_artists.dat, a pairs .txt) held out 80/20 per user, seed 0")
    e.add_argument("--train", default=None, help="train interactions file (raw IDs)")
    e.add_argument("--test", default=None, help="test interactions file (raw IDs)")
    e.add_argument("--k", type=int, nargs="+", default=[20])
    e.add_argument("-o", "--output", default=None, help="also write the metrics JSON here")
    e.add_argument("--device", choices=DEVICES, default=None)
    _add_columns(e)
    e.set_defaults(run=_cmd_evaluate)

    t = sub.add_parser("tune", help="search l2 / density / pruning / factoriser on a validation split, save the best")
    t.add_argument("input", help="interactions (.csv / .tsv / .parquet)")
    t.add_argument("-o", "--output", required=True, help="model file to write (.npz): the best, refitted on all input")
    _add_columns(t)
    t.add_argument("--k", type=int, default=20)
    t.add_argument("--metric", choices=("recall", "ndcg"), default="recall")
    t.add_argument("--validation", choices=("holdout", "users"), default="holdout",
                   help="per-user random holdout (default) or held-out users")
    t.add_argument("--validation-fraction", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--l2-grid", type=float, nargs="+", default=None, help="coarse l2 grid (default " + " ".join(f"{v:g}" for v in TUNE_L2_GRID) + ")")
    t.add_argument("--densities", type=float, nargs="+", default=None,
                   help="densities to try (default: 4, 16, 64, 256 nonzeros per item, capped by --max-model-bytes)")
    t.add_argument("--min-cooccurrence", type=float, nargs="+", default=None, help="ICF pruning levels (default " + " ".join(f"{v:g}" for v in TUNE_MIN_COOCCURRENCE) + ")")
    t.add_argument("--factorizers", nargs="+", choices=("icf", "cholmod"), default=None)
    t.add_argument("--max-model-bytes", type=float, default=None, help="largest weights size to consider")
    t.add_argument("--max-memory", type=float, default=None, help="bytes a fit may peak at (default: available)")
    t.add_argument("--max-seconds", type=float, default=None, help="stop starting trials after this many seconds")
    t.add_argument("--device", choices=DEVICES, default="auto")
    t.add_argument("--trials", default=None, help="write every trial here (JSON lines)")
    t.add_argument("--plot", default=None, help="write the accuracy / size picture here (.png, .svg, .pdf)")
    t.add_argument("--no-dense-ease", action="store_true", help="do not fit dense EASE for the plot")
    t.set_defaults(run=_cmd_tune)

    for p in (f, r, e, t):
        p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        p.set_defaults(parser=p)
    return ap


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # a usage error of the subcommand, reported as its own
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, TypeError, KeyError, OSError, MemoryError, ImportError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"sansa-gpu {args.command}: error: {_one_line(msg)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
