"""A local SMTP server that accepts every message and saves it, as sent, to a folder: one
<timestamp>-<n>.eml file per message, written atomically, so tests can read what was mailed."""

import argparse
import asyncio
import itertools
import os
import time

from aiosmtpd.controller import Controller


class SaveToFolder:
    def __init__(self, folder):
        self.folder = folder
        self.counter = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}-{next(self.counter)}.eml"
        tmp = os.path.join(self.folder, "." + name)
        header = "X-Envelope-To: " + ", ".join(envelope.rcpt_tos) + "\r\n"
        with open(tmp, "wb") as f:
            f.write(header.encode() + envelope.original_content)
        os.rename(tmp, os.path.join(self.folder, name))
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    controller = Controller(SaveToFolder(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
