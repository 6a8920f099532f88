"""`svd-dag rating ...`: serve the rating page, issue and withdraw rater links, export answers.

    svd-dag rating serve [--tasks <uri>] [--host 127.0.0.1] [--port 8765]   # default: rating_tasks' newest list,
                                                                         # followed as new ones are written
    svd-dag rating add-rater <name> [--url http://host:port]   # prints the rater's link
    svd-dag rating remove-rater <name>
    svd-dag rating raters [--url ...]                           # every rater and their link
    svd-dag rating export [--out answers.csv]                   # every answer, gold pairs included

None of these opens the catalog: they need the rating state folder (SVD_DAG_RATING_URI),
the votes root (SVD_DAG_VOTES_URI) and, to serve, the task list only.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    """The `rating` command and its subcommands, on the console script's subparsers."""
    rating = sub.add_parser("rating", help="the human rating page: serve it, issue rater links, export answers",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = rating.add_subparsers(dest="rating", required=True)
    serve = which.add_parser("serve", help="serve the rating page for a task list")
    serve.add_argument("--tasks", default=None, help="a fixed task list (rating_tasks' JSON): a local path or s3:// URI "
                                                     "(default: the newest one rating_tasks wrote under the storage "
                                                     "root, and each newer one as it appears)")
    serve.add_argument("--check-every", type=float, default=30.0, metavar="SECONDS",
                       help="without --tasks: how often to look for a newer task list (default 30)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--access-log", action="store_true", help="log every request (the lines hold rater tokens)")
    for name, text in (("add-rater", "issue a rater id and print their link"),
                       ("remove-rater", "withdraw a rater's link (their decisions stay)")):
        p = which.add_parser(name, help=text)
        p.add_argument("name", help="the rater id: letters, digits, '_', '.', '@', '-' (not judge:...)")
        if name == "add-rater":
            p.add_argument("--url", default=None, help="the page's address in the link (default: SVD_DAG_RATING_URL)")
    listing = which.add_parser("raters", help="every rater and their link")
    listing.add_argument("--url", default=None, help="the page's address in the links (default: SVD_DAG_RATING_URL)")
    export = which.add_parser("export", help="every answer as CSV (one row per decision and axis)")
    export.add_argument("--out", default="-", help="a file to write (default: stdout)")


def run(args, out=sys.stdout) -> int:
    """Run a parsed `rating` command; the exit status."""
    from svd_dag.rating.raters import RaterError, Raters
    from svd_dag.rating.tasks import TaskListError
    from svd_dag.settings import load_settings
    from svd_dag.storage import Store

    settings = load_settings()
    if args.rating == "serve":
        from svd_dag.evaluation.rating_tasks import LATEST_POINTER, latest_task_list
        from svd_dag.rating.server import serve

        storage = Store(settings.storage_uri)
        tasks = args.tasks or latest_task_list(storage)  # None: not written yet, served once it is
        if tasks is None:
            print(f"svd-dag rating serve: {storage.uri(LATEST_POINTER)} does not exist yet: serving no pairs "
                  "until rating_tasks is materialized", file=sys.stderr)
        try:
            serve(tasks, host=args.host, port=args.port, settings=settings, log_level=args.log_level,
                  access_log=args.access_log, check_every_s=args.check_every,
                  resolve_latest=None if args.tasks else (lambda: latest_task_list(storage)))
        except TaskListError as e:
            raise SystemExit(f"svd-dag rating serve: {e}") from None
        return 0
    raters = Raters(Store(settings.rating_uri))
    base = (getattr(args, "url", None) or settings.rating_url).rstrip("/")
    try:
        if args.rating == "add-rater":
            rater = raters.add(args.name)
            out.write(f"{base}/r/{rater.token}\n")
        elif args.rating == "remove-rater":
            raters.remove(args.name)
        elif args.rating == "raters":
            for rater in raters.all():
                out.write(f"{rater.rater_id}\t{base}/r/{rater.token}\n")
        elif args.rating == "export":
            from svd_dag.rating.records import read_decisions
            from svd_dag.rating.stats import export_csv

            text = export_csv(read_decisions(Store(settings.rating_uri)))
            if args.out == "-":
                out.write(text)
            else:
                with open(args.out, "w", newline="") as f:
                    f.write(text)
    except RaterError as e:
        raise SystemExit(f"svd-dag rating {args.rating}: {e}") from None
    return 0
