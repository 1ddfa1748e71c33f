"""One router a resource; each route only parses, calls a repository or the dispatcher, and shapes the answer."""
