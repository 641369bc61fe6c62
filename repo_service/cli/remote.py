"""The remote commands: a running fwrepo through repo_service.client (upload, list, publish, yank, campaigns)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from repo_service.cli.arguments import Parser, read
from repo_service.cli.terminal import ProgressBar, StatusLine, bar, print_table
from repo_service.wording import duration, moment, percent, size
from repo_service.client import Fwrepo
from repo_service.contract import CampaignReport
from repo_service.errors import FwrepoError

DEFAULT_URL = "https://127.0.0.1:8443"
CAMPAIGN_ENDED = ("halted", "cancelled", "completed")
FOLLOW_SECONDS = 2.0


def _client_options() -> Parser:
    parser = Parser(add_help=False)
    group = parser.add_argument_group("server")
    group.add_argument("--url", default=os.environ.get("FWREPO_URL", DEFAULT_URL),
                       help=f"fwrepo server [FWREPO_URL; default {DEFAULT_URL}]")
    group.add_argument("--key", default=os.environ.get("FWREPO_KEY"), help="API key [FWREPO_KEY]")
    development_ca = Path(os.environ.get("FWREPO_DATA_DIR", "var")) / "tls" / "ca.pem"
    default_ca = os.environ.get("FWREPO_CACERT") or (str(development_ca) if development_ca.exists() else None)
    group.add_argument("--cacert", type=Path, default=default_ca,
                       help=f"CA certificate that the server's TLS certificate chains to [FWREPO_CACERT; default "
                            f"{development_ca} when it exists, else the system's trust store]")
    return parser


def register(commands: Any) -> None:
    client = _client_options()

    upload = commands.add_parser("upload", parents=[client], help="upload a firmware image",
                                 description="Upload a firmware image. Prints whether it stored a new build or "
                                             "found these bytes already stored; the same bytes with other "
                                             "metadata are refused, naming what differs.")
    upload.add_argument("file", type=Path, help="the firmware image")
    upload.add_argument("--vendor", required=True, help="the charger maker, as OCPP names it (at most 50 characters)")
    upload.add_argument("--model", dest="models", action="append", required=True, metavar="MODEL",
                        help="a charger model the build is for; repeat for several")
    upload.add_argument("--version", dest="firmware_version", required=True, metavar="VERSION",
                        help="the build's version, unique per vendor (e.g. 1.4.0)")
    upload.add_argument("--hardware-revision", dest="hardware_revisions", action="append", default=[],
                        metavar="REVISION",
                        help="a hardware revision the build is for; repeat for several (default: any)")
    upload.add_argument("--channel", help="release channel, e.g. beta (default stable)")
    upload.add_argument("--min-version", help="the oldest version this build may be installed over")
    upload.add_argument("--release-notes", help="what changed, for people")
    upload.add_argument("--sha256", help="declared digest; the upload is refused if the bytes differ")
    upload.add_argument("--sign-key", type=Path, help="your PEM private key: signs here, never leaves this machine "
                        "(passphrase from FWREPO_SIGN_KEY_PASSPHRASE or a prompt)")
    upload.add_argument("--json", action="store_true", help="print the stored record as JSON (scripts take its id)")
    upload.set_defaults(handler=_upload)

    listing = commands.add_parser("list", parents=[client], help="list firmware in the catalog, newest first")
    listing.add_argument("--vendor", help="only this vendor's builds")
    listing.add_argument("--model", help="only builds for this model")
    listing.add_argument("--status", choices=["uploaded", "published", "yanked"], help="only builds in this state")
    listing.add_argument("--channel", help="only builds on this channel")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="print the JSON reply")
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", parents=[client], help="show one firmware record")
    show.add_argument("firmware_id", help="the build's ID")
    show.set_defaults(handler=_show)
    publish = commands.add_parser("publish", parents=[client], help="publish an uploaded firmware")
    publish.add_argument("firmware_id", help="the build's ID")
    publish.set_defaults(handler=_publish)
    yank = commands.add_parser("yank", parents=[client], help="withdraw a firmware")
    yank.add_argument("firmware_id", help="the build's ID")
    yank.add_argument("--reason", required=True, help="why this build must not be installed")
    yank.set_defaults(handler=_yank)

    campaigns = commands.add_parser("campaigns", help="staged rollouts (remote)")
    campaign_commands = campaigns.add_commands(dest="campaigns_command", required=True, metavar="COMMAND")
    campaign_list = campaign_commands.add_parser("list", parents=[client], help="campaigns, newest first")
    campaign_list.set_defaults(handler=_campaigns)
    campaign_show = campaign_commands.add_parser("show", parents=[client], help="a campaign's report")
    campaign_show.add_argument("campaign_id", help="the campaign's ID")
    campaign_show.add_argument("--follow", action="store_true",
                               help="follow the campaign until it ends: a progress bar on a terminal, "
                                    "one line per change elsewhere")
    campaign_show.add_argument("--json", action="store_true", help="print the JSON reply")
    campaign_show.set_defaults(handler=_campaigns)
    for action, text in (("pause", "stop handing out grants"), ("resume", "go on after a pause"),
                         ("cancel", "stop for good and revoke every unused grant")):
        steer = campaign_commands.add_parser(action, parents=[client], help=text)
        steer.add_argument("campaign_id", help="the campaign's ID")
        steer.set_defaults(handler=_campaigns)


def _fwrepo(arguments: argparse.Namespace) -> Fwrepo:
    """The server the options name; its refusals reach main as repo_service.client errors, printed as they read."""
    if not arguments.key:
        raise FwrepoError("an API key is required: --key KEY or FWREPO_KEY")
    return Fwrepo(arguments.url, arguments.key, ca_file=arguments.cacert)


def _print_json(reply: BaseModel) -> None:
    print(json.dumps(reply.model_dump(mode="json"), indent=2))


def _upload(arguments: argparse.Namespace) -> None:
    path: Path = arguments.file
    if not path.is_file():
        raise FwrepoError(f"{path}: no such file")
    signature = _sign_locally(path, arguments.sign_key) if arguments.sign_key else None
    progress = ProgressBar()
    with _fwrepo(arguments) as fwrepo:
        try:
            uploaded = fwrepo.upload(
                path, vendor=arguments.vendor, models=arguments.models, version=arguments.firmware_version,
                # An empty option is left out, as if not given.
                channel=arguments.channel or None, hardware_revisions=arguments.hardware_revisions,
                min_version=arguments.min_version or None, release_notes=arguments.release_notes or None,
                sha256=arguments.sha256 or None, signature=signature, progress=progress)
        finally:
            progress.end()
    record = uploaded.firmware
    elapsed = time.monotonic() - progress.started
    if uploaded.created:
        outcome = f"stored new build {record.id}"
    else:
        outcome = f"already stored as {record.id} (same bytes and metadata; nothing changed)"
    line = (f"{outcome}: {record.vendor} {record.version}  models {', '.join(record.models)}  "
            f"{size(record.size)}  sha256 {record.sha256}  {record.status}  ({duration(elapsed)})")
    if arguments.json:
        _print_json(record)
        print(line, file=sys.stderr)
    else:
        print(line)


def _sign_locally(image: Path, key_path: Path) -> str:
    """The release engineer's signature, made on this machine: the private key is never sent."""
    import getpass

    from repo_service.domain import pki

    data = read(key_path)
    passphrase = os.environ.get("FWREPO_SIGN_KEY_PASSPHRASE")
    if passphrase is None and b"ENCRYPTED" in data:
        passphrase = getpass.getpass(f"passphrase for {key_path}: ")
    key = pki.load_private_key(data, passphrase.encode() if passphrase else None, "--sign-key")
    digest = hashlib.sha256()
    with open(image, "rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    return pki.sign_digest(key, pki.algorithm_of(key), digest.hexdigest())


def _list(arguments: argparse.Namespace) -> None:
    with _fwrepo(arguments) as fwrepo:
        page = fwrepo.list_firmware(vendor=arguments.vendor, model=arguments.model, status=arguments.status,
                                    channel=arguments.channel, limit=arguments.limit)
    if arguments.json:
        _print_json(page)
        return
    rows = [
        [item.id, item.vendor, ",".join(item.models), item.version, item.channel, item.status, size(item.size),
         moment(item.created_at)]
        for item in page.items
    ]
    print_table(["ID", "VENDOR", "MODELS", "VERSION", "CHANNEL", "STATUS", "SIZE", "CREATED"], rows)
    if page.total > len(page.items):
        print(f"({len(page.items)} of {page.total}; use --limit or filters)")


def _show(arguments: argparse.Namespace) -> None:
    with _fwrepo(arguments) as fwrepo:
        _print_json(fwrepo.firmware(arguments.firmware_id))


def _publish(arguments: argparse.Namespace) -> None:
    with _fwrepo(arguments) as fwrepo:
        record = fwrepo.publish(arguments.firmware_id)
    print(f"{record.id}  {record.vendor} {record.version}  {record.status}")


def _yank(arguments: argparse.Namespace) -> None:
    with _fwrepo(arguments) as fwrepo:
        record = fwrepo.yank(arguments.firmware_id, arguments.reason)
    print(f"{record.id}  {record.vendor} {record.version}  {record.status}: {record.yank_reason}")


def _campaigns(arguments: argparse.Namespace) -> None:
    with _fwrepo(arguments) as fwrepo:
        _campaign_command(fwrepo, arguments)


def _campaign_command(fwrepo: Fwrepo, arguments: argparse.Namespace) -> None:
    command = arguments.campaigns_command
    if command == "list":
        print_table(["ID", "FIRMWARE", "STATUS", "WAVE", "CREATED"],
                    [[item.id, item.firmware_id, item.status, f"{item.current_wave} of {item.waves}",
                      moment(item.created_at)] for item in fwrepo.campaigns().items])
        return
    steer = {"pause": fwrepo.pause_campaign, "resume": fwrepo.resume_campaign, "cancel": fwrepo.cancel_campaign}
    if command in steer:
        print_campaign(steer[command](arguments.campaign_id))
        return
    report = fwrepo.campaign(arguments.campaign_id)
    if arguments.json:
        _print_json(report)
        return
    if not arguments.follow or report.status in CAMPAIGN_ENDED:
        print_campaign(report)
        return
    line = StatusLine(sys.stdout)
    while report.status not in CAMPAIGN_ENDED:
        time.sleep(FOLLOW_SECONDS)
        report = fwrepo.campaign(arguments.campaign_id)
        line.show(campaign_progress(report))
    line.end()
    print_campaign(report)


def campaign_progress(report: CampaignReport) -> str:
    jobs, done = sum(wave.chargers for wave in report.waves), report.finished
    return (f"{bar(done / jobs if jobs else 1.0)} {done}/{jobs} finished  "
            f"wave {report.current_wave} of {len(report.waves)}  {report.status}")


def _states(states: dict[str, int]) -> str:
    return ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "-"


def print_campaign(report: CampaignReport) -> None:
    reason = f": {report.status_reason}" if report.status_reason else ""
    print(f"campaign {report.id}  firmware {report.firmware_id}  {report.status}{reason}  "
          f"created {moment(report.created_at)}")
    print(campaign_progress(report))
    rows = [[str(wave.wave), str(wave.chargers), _states(wave.states), percent(wave.failure_rate),
             percent(wave.failure_threshold)] for wave in report.waves]
    print_table(["WAVE", "CHARGERS", "STATES", "FAILED", "THRESHOLD"], rows)
    download, completion = report.download_seconds, report.completion_seconds
    print(f"success rate {percent(report.success_rate, 1)}; "
          f"download median {duration(download.median)}, p95 {duration(download.p95)}; "
          f"completion median {duration(completion.median)}, p95 {duration(completion.p95)}; "
          f"{size(report.bytes_served)} served; skipped: {_states(report.skipped) if report.skipped else 'none'}; "
          f"waiting for their wave: {report.pending}")
    if report.dispatches is not None:
        print(f"dispatched by fwrepo through {report.dispatch}: {_states(report.dispatches)}")
