"""One backend per filesystem kind; each says what it can do as data (PoolCapabilities)."""
