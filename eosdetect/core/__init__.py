"""The pure NumPy core: arrays in, arrays out; it imports nothing else of eosdetect but its errors."""
