"""Media engine: everything a call's audio needs.

Sans-I/O: ``g711`` (PCMU/PCMA), ``rtp`` and ``rtcp`` (packets), ``stats`` (loss/jitter),
``sdp`` (parse + offer/answer), ``tones`` (generated audio), ``ports`` (RTP port pairs),
``pacer`` (absolute-deadline pacing + per-stream send state). I/O: ``session`` (UDP sockets,
``RtpSession``, and the ``MediaScheduler`` serving all streams from one tick).
Never imports store/FastAPI/SQLModel.
"""
