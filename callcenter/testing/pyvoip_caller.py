"""pyVoIP 1.6.8 as a sloppy caller, run as its own process so its threads can never outlive a test.

    python -m callcenter.testing.pyvoip_caller --server 127.0.0.1 --port 5060 --number 100

Places one call without registering (pyVoIP is meant to register with a PBX; we call the server
directly), waits for the answer, holds the call `--hold` seconds and hangs up. Prints one JSON line
per step ({"step": ..., ...}) and exits 0 when the call was answered and hung up, 1 otherwise.
Quirks it brings (see shared/TESTING-PEERS.md): no port in its Request-URI, a late ACK resent for
every retransmitted 200, and an INVITE that waits for 100/180 before anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _say(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--number", default="100")
    ap.add_argument("--local-ip", default="127.0.0.1")
    ap.add_argument("--sip-port", type=int, required=True, help="pyVoIP's own SIP (UDP) port")
    ap.add_argument("--rtp-low", type=int, required=True)
    ap.add_argument("--rtp-high", type=int, required=True)
    ap.add_argument("--hold", type=float, default=1.0, help="seconds to stay in the answered call")
    ap.add_argument("--answer-timeout", type=float, default=10.0)
    args = ap.parse_args(argv)

    import pyVoIP.VoIP as voip  # before pyVoIP.SIP: importing SIP first is a circular import

    phone = voip.VoIPPhone(
        args.server,
        args.port,
        "pyvoip",
        "unused",
        myIP=args.local_ip,
        sipPort=args.sip_port,
        rtpPortLow=args.rtp_low,
        rtpPortHigh=args.rtp_high,
    )
    phone.sip.register = lambda: True  # type: ignore[method-assign]  # call the server directly
    answered = hung_up = False
    phone.start()
    try:
        call = phone.call(args.number)
        call_id = call.request.headers["Call-ID"]
        _say("dialled", call_id=call_id)
        deadline = time.monotonic() + args.answer_timeout
        while call.state != voip.CallState.ANSWERED and time.monotonic() < deadline:
            if call.state == voip.CallState.ENDED:
                break
            time.sleep(0.05)
        answered = call.state == voip.CallState.ANSWERED
        _say("answered" if answered else "not-answered", state=str(call.state))
        if answered:
            time.sleep(args.hold)  # stay on the line a moment, as a person would
            if call.state == voip.CallState.ANSWERED:
                call.hangup()
                hung_up = True
                _say("hung-up")
            else:
                _say("ended-by-server", state=str(call.state))
    finally:
        phone.stop()
        _say("stopped")
    return 0 if answered and hung_up else 1


if __name__ == "__main__":
    sys.exit(main())
