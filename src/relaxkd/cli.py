"""The ``relaxkd`` command line: one subcommand per stage, plus run / sweep / report / export."""
from __future__ import annotations

import os
import signal
import sys
import threading


def _startup_stop(signum, frame):  # pragma: no cover - exercised by subprocess tests
    """Before ``main()`` takes over (imports): nothing is written yet, so stop at once with the line."""
    sys.stderr.write(_STOP_LINES.get(signum, _STOP_LINES[signal.SIGINT]) + "\n")
    sys.stderr.flush()
    os._exit(128 + signum)


_STOP_LINES = {
    signal.SIGINT: "interrupted: completed artifacts are kept; rerun the same command to resume",
    signal.SIGTERM: "terminated (SIGTERM): completed artifacts are kept; rerun the same command to resume",
}
# Only in the `relaxkd` process itself (console script or `python -m relaxkd`), not when a program
# imports this module: Ctrl-C while the heavy imports below run is already the documented line.
if threading.current_thread() is threading.main_thread() and (
    os.path.basename(sys.argv[0] if sys.argv else "") == "relaxkd" or sys.argv[:1] == ["-m"]
    or (sys.argv and sys.argv[0].endswith(os.path.join("relaxkd", "__main__.py")))
):
    for _signum in _STOP_LINES:
        if signal.getsignal(_signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(_signum, _startup_stop)
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Optional

import click
import typer

from relaxkd.errors import Interrupted, UserError
from relaxkd.versions import untested

if untested("typer"):  # its private click copy is imported next: one line, not a traceback
    sys.exit(f"error: {untested('typer')}")
import typer._click.exceptions as typer_click  # noqa: E402

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Crossmodal knowledge distillation with WordNet-relaxed CLIP text embeddings.",
)
embed_app = typer.Typer(no_args_is_help=True, help="CLIP embeddings of images or WordNet nouns.")
app.add_typer(embed_app, name="embed")

ConfigArg = typer.Argument(..., help="experiment YAML, e.g. configs/demo.yaml")
OverridesArg = typer.Argument(None, help="key=value overrides, e.g. distill.temperature=3")


def _config(config: Path, overrides: list[str] | None):
    """The validated config, and the environment it needs (a launcher for several nodes)."""
    from relaxkd.config import load_config
    from relaxkd.engine.trainer import check_launcher

    cfg = load_config(config, overrides or [])
    check_launcher(cfg.trainer)
    return cfg


def _context(config: Path, overrides: list[str] | None):
    from relaxkd.stages.context import Context

    return Context(_config(config, overrides))


def _locked(ctx):
    """Exclusive use of the run directory (not in DDP workers, which share the parent's)."""
    from relaxkd.engine.trainer import is_main_process
    from relaxkd.artifacts import run_lock

    return run_lock(ctx.cfg.run_dir) if is_main_process() else nullcontext()


def _say(line: str) -> None:
    typer.echo(line)


@embed_app.command("images")
def embed_images(config: Path = ConfigArg, overrides: Optional[list[str]] = OverridesArg) -> None:
    """CLIP image embeddings of the training and validation sets."""
    ctx = _context(config, overrides)
    from relaxkd.stages.embed_images import embed_images as stage

    with _locked(ctx):
        art = stage(ctx)
    _say(f"image embeddings: {art.file('embeddings.safetensors')}")


@embed_app.command("nouns")
def embed_nouns(config: Path = ConfigArg, overrides: Optional[list[str]] = OverridesArg) -> None:
    """CLIP text embeddings of the candidate WordNet nouns (shared by all datasets)."""
    ctx = _context(config, overrides)
    from relaxkd.stages.embed_nouns import embed_nouns as stage

    with _locked(ctx):
        art = stage(ctx)
    _say(f"noun embeddings: {art.file('embeddings.safetensors')}")


@app.command()
def relax(config: Path = ConfigArg, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Algorithm 1: select WordNet-relaxed nouns per image cluster (the relaxed bank)."""
    ctx = _context(config, overrides)
    from relaxkd.stages.relax import relax as stage

    with _locked(ctx):
        art = stage(ctx)
    _say(art.file("nouns.txt").read_text().rstrip())  # the per-cluster noun listing
    _say(f"relaxed bank: {art.file('bank.safetensors')}")
    _say(f"nouns per cluster: {art.file('nouns.txt')}")


class TeacherKind(str, Enum):
    unimodal = "unimodal"
    multimodal = "multimodal"


class Aug(str, Enum):
    strong = "strong"
    weak = "weak"


@app.command()
def teacher(
    config: Path = ConfigArg,
    overrides: Optional[list[str]] = OverridesArg,
    kind: TeacherKind = typer.Option(TeacherKind.multimodal, help="unimodal (T_m member) or multimodal (T_x)"),
    member: Optional[str] = typer.Option(None, help="unimodal member name from the config"),
    aug: Optional[Aug] = typer.Option(None, help="unimodal augmentation (picks or adds a member)"),
    seed: int = typer.Option(0, help="unimodal member seed, with --aug"),
) -> None:
    """Train a teacher: a unimodal ResNet (T_m member) or the multimodal teacher T_x."""
    ctx = _context(config, overrides)
    from relaxkd.stages.multimodal import multimodal_teacher
    from relaxkd.stages.unimodal import unimodal_teacher

    with _locked(ctx):
        if kind == TeacherKind.multimodal:
            art = multimodal_teacher(ctx)
        else:
            name = member or _member_for(ctx, aug.value if aug else "strong", seed)
            art = unimodal_teacher(ctx, name)
    _report_metrics(art)


def _member_for(ctx, aug: str, seed: int) -> str:
    from relaxkd.config import UnimodalMember

    for m in ctx.cfg.unimodal.members:
        if m.aug == aug and m.seed == seed:
            return m.name
    name = f"{aug}-seed{seed}"
    ctx.cfg.unimodal.members = [*ctx.cfg.unimodal.members, UnimodalMember(name=name, aug=aug, seed=seed)]
    return name


def _report_metrics(art) -> None:
    metrics = art.read_json("metrics.json")
    shown = ", ".join(f"{k} {metrics[k]:.2f}" for k in ("top1", "top5", "many_shot", "medium_shot", "few_shot") if k in metrics)
    _say(f"{art.stage}: {shown}")
    _say(f"artifact: {art.path}")


@app.command()
def distill(config: Path = ConfigArg, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Distil the student from the configured teachers (trains missing teachers first)."""
    ctx = _context(config, overrides)
    from relaxkd.stages.distill import distill as stage

    with _locked(ctx):
        art = stage(ctx)
    _report_metrics(art)


@app.command()
def attribute(config: Path = ConfigArg, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Integrated Gradients on T_x: image vs text attribution shares."""
    from relaxkd.stages.attribute import attribute as stage

    ctx = _context(config, overrides)
    with _locked(ctx):
        art = stage(ctx)
    result = art.read_json("attribution.json")
    _say(f"image share {result['image_share']:.3f}, text share {result['text_share']:.3f}")
    _say(f"artifact: {art.path}")


@app.command()
def run(config: Path = ConfigArg, overrides: Optional[list[str]] = OverridesArg) -> None:
    """The whole pipeline for one experiment, reusing every artifact that already exists."""
    from relaxkd.report import write_report
    from relaxkd.stages.plan import run_experiment

    ctx = _context(config, overrides)
    with _locked(ctx):
        report = run_experiment(ctx, then=[("report", lambda: write_report(ctx.cfg.run_dir))])
    _say(f"report: {report}")


@app.command()
def sweep(
    config: Path = ConfigArg,
    overrides: Optional[list[str]] = OverridesArg,
    family: str = typer.Option("table2", help="trial family: table1, table2, table3, figure2"),
    trials: Optional[str] = typer.Option(None, help="comma-separated trial names (default: all)"),
    print_commands: bool = typer.Option(False, "--print-commands", help="print one command per trial and exit"),
) -> None:
    """A family of trials (the paper's tables and figures) sharing artifacts."""
    from relaxkd.report import write_report
    from relaxkd.stages.plan import run_sweep
    from relaxkd.trials import select_trials, sweep_commands

    if trials is not None and not [t for t in trials.split(",") if t.strip()]:
        raise UserError("--trials is empty; name trials (comma-separated) or leave the option out to run them all")
    if print_commands:
        for line in sweep_commands(config, overrides or [], family, trials):
            _say(line)
        return
    select_trials(family, trials)  # reject unknown names before any work
    ctx = _context(config, overrides)
    with _locked(ctx):
        run_sweep(ctx, family, trials)
        report_path = write_report(ctx.cfg.run_dir)
    _say(f"report: {report_path}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory, e.g. runs/demo")) -> None:
    """Tables (Markdown, CSV) and figures (PNG) from the artifacts of a run directory."""
    from relaxkd.report import write_report

    _say(f"report: {write_report(run_dir)}")


@app.command()
def export(
    config: Path = ConfigArg,
    overrides: Optional[list[str]] = OverridesArg,
    out: Path = typer.Option(Path("export"), help="output directory"),
    format: str = typer.Option("torchscript", help="torchscript or onnx (safetensors is always written)"),
    artifact: Optional[Path] = typer.Option(None, help="a distill-* artifact directory (default: the newest)"),
) -> None:
    """Export the trained student: safetensors + TorchScript or ONNX."""
    from relaxkd.stages.export import export_student

    ctx = _context(config, overrides)
    for path in export_student(ctx, out, format, artifact):
        _say(f"wrote {path}")


@app.command()
def predict(
    images: list[Path] = typer.Argument(..., help="image files"),
    model: Path = typer.Option(..., help="directory written by `relaxkd export`"),
    top: int = typer.Option(1, min=1, help="how many classes to print per image (at least 1)"),
) -> None:
    """Classify image files with an exported student."""
    from relaxkd.stages.export import predict_files

    for line in predict_files(model, images, top):
        _say(line)


@app.command("validate")
def validate(config: Path = ConfigArg, overrides: Optional[list[str]] = OverridesArg) -> None:
    """Validate a config (keys, values, registry names, the paths it names) and print the resolved YAML."""
    import yaml

    from relaxkd.config import load_config
    from relaxkd.preflight import check_names, check_paths

    cfg = load_config(config, overrides or [])
    if cfg.trainer.num_nodes > 1:  # the launcher check imports Lightning: only when it can fail
        from relaxkd.engine.trainer import check_launcher

        check_launcher(cfg.trainer)
    check_names(cfg)  # without importing torch: validate answers in well under 2 s
    check_paths(cfg)
    _say(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # errors re-raised from DataLoader workers carry the original message on their last line
    return text[-1] if text else type(exc).__name__


#: Typer >= 0.20 vendors its own copy of click: catch both, or usage errors escape as tracebacks.
_CLICK_ERRORS = (typer_click.ClickException, click.exceptions.ClickException)
_NO_ARGS_HELP = (typer_click.NoArgsIsHelpError, getattr(click.exceptions, "NoArgsIsHelpError", typer_click.NoArgsIsHelpError))
_ABORTS = (typer.Abort, click.exceptions.Abort)
_WORKER_MARK = "UserError: "


def _find_user_error(exc: BaseException) -> UserError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        # A DataLoader worker re-raises "Caught UserError in DataLoader worker ... Original Traceback
        # ... relaxkd.errors.UserError: <message>", as a UserError when it can rebuild the type: keep
        # only the original message.
        if "Original Traceback" in text and _WORKER_MARK in text:
            return UserError(text.rsplit(_WORKER_MARK, 1)[1])
        if isinstance(exc, UserError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _disk_full_error(exc: BaseException) -> UserError | None:
    """A full disk outside the artifact store (which says which artifact itself): export, report."""
    from relaxkd.artifacts import disk_full

    if not disk_full(exc):
        return None
    filename = getattr(exc, "filename", None)
    where = f" while writing {filename}" if filename else ""
    return UserError(f"no space left on device{where}; free space or write to another disk "
                     f"(completed artifacts are kept, files already written are whole)")


def _usage_message(exc: BaseException) -> str:
    message = " ".join(exc.format_message().split()).replace("Value error, ", "")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    return message


class _Signals:
    """SIGINT/SIGTERM during a command: the first raises :class:`Interrupted` where the main thread is
    (stages unwind, the artifact store drops its temporary directory, Lightning tears down); a
    second one while that cleanup runs stops the process at once. Forked DataLoader workers get the
    default behaviour (their parent reports)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def handle(self, signum, frame) -> None:
        if os.getpid() != self.owner:  # a forked worker: what it would do without us
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.received is not None:
            _startup_stop(self.received, frame)
        self.received = signum
        raise Interrupted(signum)

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_LINES:
                self.previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _interrupted(signum: int = signal.SIGINT) -> None:
    typer.echo(_STOP_LINES.get(signum, _STOP_LINES[signal.SIGINT]), err=True)
    sys.exit(128 + signum)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with _Signals() as signals:
        try:
            _main()
        except SystemExit as exc:
            # Lightning answers SIGTERM with a bare SystemExit and Ctrl-C with sys.exit(1): a signal
            # received during the command decides the exit code, whatever exception carried it out
            if signals.received is not None and exc.code not in (128 + signals.received,):
                _interrupted(signals.received)
            raise
        except Interrupted as exc:
            _interrupted(exc.signum)
        except BaseException:
            if signals.received is not None:
                _interrupted(signals.received)
            raise
        if signals.received is not None:  # swallowed on the way (e.g. by a library): still stop honestly
            _interrupted(signals.received)


def _main() -> None:
    try:
        # typer turns a KeyboardInterrupt inside a command into an exit code it returns
        code = app(standalone_mode=False, prog_name="relaxkd")  # also under `python -m relaxkd`
    except _ABORTS:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except _NO_ARGS_HELP as exc:  # `relaxkd` or `relaxkd embed` alone: the help, exit 2 as click does
        if exc.format_message().strip():  # with rich installed, typer has printed it already
            typer.echo(exc.format_message(), err=True)
        sys.exit(2)
    except _CLICK_ERRORS as exc:
        typer.echo(f"error: {_usage_message(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - user errors become one line, bugs keep their traceback
        user_error = _find_user_error(exc) or _disk_full_error(exc)
        if user_error is None:
            raise
        typer.echo(f"error: {_one_line(user_error)}", err=True)
        sys.exit(UserError.exit_code)
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
