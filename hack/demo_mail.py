"""A stand-in mail server for `make demo`: an SMTP server on 127.0.0.1 (aiosmtpd, the dev extra)
that writes each message it receives to DIR/NNN-RECIPIENT.eml and prints who it was for.

Runs on loopback only; `make demo-down` stops it by the PID it wrote.

    python hack/demo_mail.py PORT DIR
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Keep:
    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        to = ",".join(envelope.rcpt_tos)
        safe = "".join(c if c.isalnum() or c in "@.-" else "_" for c in to)[:80]
        (self.folder / f"{self.count:03d}-{safe}.eml").write_bytes(envelope.original_content or b"")
        print(f"mail {self.count} to {to}", flush=True)
        return "250 OK"


def main() -> None:
    port, folder = int(sys.argv[1]), Path(sys.argv[2])
    controller = Controller(Keep(folder), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"demo mail server on 127.0.0.1:{port}, keeping mail in {folder}", flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
