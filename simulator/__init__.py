"""The festival-day simulator: profiles, curves, order generation and replay pacing."""
