"""Plan: what applying would change, as frozen data; views render it."""
