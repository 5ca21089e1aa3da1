"""The pure core: formats, aggregation and milestone rules. No I/O imports here."""
