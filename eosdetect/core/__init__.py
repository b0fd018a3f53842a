"""The pure NumPy core: arrays in, arrays out; it imports nothing of eosdetect above it."""
