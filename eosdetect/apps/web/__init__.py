"""The page ``eosdetect serve`` shows at ``/`` (index.html, no external assets)."""
