"""What runs inside the platform: training steps, drift checks.

Imported only by engines, never by the CLI's fast paths.
"""
