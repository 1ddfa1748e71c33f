-- Sample shop database for the no-API-key example (created as SQLite by agentflow).
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, item TEXT NOT NULL, status TEXT NOT NULL, total REAL NOT NULL);
DELETE FROM orders;
INSERT INTO orders (id, customer, item, status, total) VALUES
 (1, 'acme', 'Blue widget', 'shipped', 19.90),
 (2, 'acme', 'Red widget', 'processing', 24.50),
 (3, 'acme', 'Widget polish', 'delivered', 5.00),
 (4, 'globex', 'Hyperdrive', 'processing', 999.00),
 (5, 'globex', 'Flux capacitor', 'cancelled', 121.00),
 (6, 'initech', 'TPS report binder', 'delivered', 3.20);
