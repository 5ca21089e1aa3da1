"""Counters and gauges rendered in the Prometheus text format. Pure: no I/O."""

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class ServerMetrics:
    messages_sent: int = 0
    messages_direct: int = 0  # of messages_sent: written straight to the socket by a broadcast
    bytes_sent: int = 0
    ticks_coalesced: int = 0
    updates_dropped: int = 0
    broadcast_seconds_sum: float = 0.0
    broadcasts: int = 0
    tick_delay_seconds_sum: float = 0.0  # feed entry (its id's time) -> its broadcast starts
    tick_delays: int = 0
    gc_full_seconds_sum: float = 0.0
    gc_full: int = 0
    feed_bad_entries: int = 0  # feed entries skipped: not a state update
    resume_entries_read: int = 0  # feed entries read to find the milestones a resume missed
    resume_readers_peak: int = 0  # the most resumes reading the feed at once
    connections_refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    disconnects: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """Prometheus text: our counters plus the given gauges (name -> (help, value))."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            # A sample's "labels" starting with "_" is a suffix of the name (summary parts).
            for labels, value in samples:
                suffix, labels = (labels, "") if labels.startswith("_") else ("", labels)
                text = str(value) if isinstance(value, int) else repr(float(value))
                lines.append(f"{name}{suffix}{labels} {text}")

        metric(
            "ticker_messages_sent_total",
            "counter",
            "Websocket messages sent.",
            [("", self.messages_sent)],
        )
        metric(
            "ticker_messages_direct_total",
            "counter",
            "Of the messages sent, those a broadcast wrote straight to the client's socket "
            "(the rest went through the client's own sender: greeting, slow or rate-limited).",
            [("", self.messages_direct)],
        )
        metric(
            "ticker_bytes_sent_total",
            "counter",
            "Websocket payload bytes sent.",
            [("", self.bytes_sent)],
        )
        metric(
            "ticker_ticks_coalesced_total",
            "counter",
            "Ticks replaced by a newer one before a slow client took them.",
            [("", self.ticks_coalesced)],
        )
        metric(
            "ticker_updates_dropped_total",
            "counter",
            "Messages not delivered because their client was disconnected as stuck.",
            [("", self.updates_dropped)],
        )
        metric(
            "ticker_feed_bad_entries_total",
            "counter",
            "Feed entries skipped because they are not a state update (see the log).",
            [("", self.feed_bad_entries)],
        )
        metric(
            "ticker_resume_entries_read_total",
            "counter",
            "Feed entries read to find the milestones resuming clients missed.",
            [("", self.resume_entries_read)],
        )
        metric(
            "ticker_resume_readers_peak",
            "gauge",
            "The most resumes that have read the feed at once (bounded per server).",
            [("", self.resume_readers_peak)],
        )
        metric(
            "ticker_disconnects_total",
            "counter",
            "Closed websocket connections by reason.",
            [(f'{{reason="{r}"}}', n) for r, n in sorted(self.disconnects.items())],
        )
        metric(
            "ticker_connections_refused_total",
            "counter",
            "Refused websocket handshakes by reason.",
            [(f'{{reason="{r}"}}', n) for r, n in sorted(self.connections_refused.items())],
        )
        metric(
            "ticker_broadcast_seconds",
            "summary",
            "Time to hand one update to all clients.",
            [("_sum", self.broadcast_seconds_sum), ("_count", self.broadcasts)],
        )
        metric(
            "ticker_tick_delay_seconds",
            "summary",
            "From a feed entry (its id's time, Redis's clock) to the start of its broadcast.",
            [("_sum", self.tick_delay_seconds_sum), ("_count", self.tick_delays)],
        )
        metric(
            "ticker_gc_full_seconds",
            "summary",
            "Full garbage collections, run on a schedule (the server pauses meanwhile).",
            [("_sum", self.gc_full_seconds_sum), ("_count", self.gc_full)],
        )
        for name, (help_text, value) in gauges.items():
            metric(name, "gauge", help_text, [("", value)])
        return "\n".join(lines) + "\n"
