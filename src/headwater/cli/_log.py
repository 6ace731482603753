"""`headwater log verify`: the scrub, reading every batch of every partition to check it.

Recovery after a crash only re-reads what came after the last checkpoint; a bit flipped on disk
in an old, closed segment is found only by reading it again. That is what this command does.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from headwater.cli._common import (
    DataDirOption,
    error_line,
    format_bytes,
    open_data_dir,
    remember_data_dir,
    stderr_console,
)
from headwater.errors import HeadwaterError
from headwater.log.partition_log import PartitionLog

log_app = typer.Typer(
    name="log",
    help="Check the logs in a data directory.",
    no_args_is_help=True,
)


@log_app.callback()
def _log_group(ctx: typer.Context, data_dir: DataDirOption = None) -> None:
    """Check the logs in a data directory (no server)."""
    remember_data_dir(ctx, data_dir)


def _verify_partition(log: PartitionLog, progress: Progress | None, task: TaskID) -> list[str]:
    """The partition's problems; an error that stops the scrub is one more problem."""

    def advance(size: int) -> None:
        if progress is not None:
            progress.advance(task, size)

    try:
        return log.verify(on_progress=advance)
    except HeadwaterError as error:
        return [f"topic {log.topic!r} partition {log.partition}: {error}"]


@log_app.command("verify")
def verify(
    ctx: typer.Context,
    topics: Annotated[
        list[str] | None,
        typer.Argument(metavar="[TOPIC]...", help="Topics to verify (default: all)."),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Read every batch and check its CRC and offsets; exit 1 if any problem is found."""
    problems = 0
    with open_data_dir(ctx, data_dir, "headwater log verify") as manager:
        names = list(dict.fromkeys(topics)) if topics else [info.name for info in manager.topics()]
        logs = [log for name in names for log in manager.partitions(name)]
        for log in logs:
            # Recovery at open already cut what it found broken; say so, but it is repaired.
            report = manager.recovery.get(log.name)
            for note in report.problems if report is not None else ():
                typer.echo(f"note: recovery on open: {note}", err=True)
        total = sum(log.size_bytes for log in logs)
        progress: Progress | None = None
        task = TaskID(0)
        if sys.stderr.isatty():
            progress = Progress(
                TextColumn("verifying"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=True,
            )
            progress.start()
            task = progress.add_task("verify", total=total)
        try:
            for log in logs:
                found = _verify_partition(log, progress, task)
                for problem in found:
                    typer.echo(problem)
                problems += len(found)
        finally:
            if progress is not None:
                progress.stop()
    plural = "partition" if len(logs) == 1 else "partitions"
    summary = f"verified {len(logs)} {plural}, {total} bytes ({format_bytes(total)})"
    if problems:
        error_line(f"{summary}: {problems} {'problem' if problems == 1 else 'problems'}")
        raise typer.Exit(1)
    typer.echo(f"{summary}, no problems")


__all__ = ["log_app"]
