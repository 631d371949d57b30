"""Small pieces every layer may use: values in Lua's words, rate-limited logs, rate limits.

The bottom layer: imports nothing of triodist.
"""
