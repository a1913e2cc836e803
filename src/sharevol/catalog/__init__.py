"""Volume and snapshot records kept on the pool itself, written atomically, under file locks."""
