//! The demo's fixed world, seeded by each service into its own database at start and used by
//! the load generator: the same customers in `auth` and `user`, the SKUs `inventory` stocks.

/// (username, customer number, display name). Every demo account's password is [`PASSWORD`].
pub const CUSTOMERS: [(&str, u32, &str); 8] = [
    ("alice", 1, "Alice Adams"),
    ("bob", 2, "Bob Brown"),
    ("carol", 3, "Carol Clark"),
    ("dave", 4, "Dave Davis"),
    ("erin", 5, "Erin Evans"),
    ("frank", 6, "Frank Fisher"),
    ("grace", 7, "Grace Green"),
    ("heidi", 8, "Heidi Hill"),
];

/// The password of every demo account.
pub const PASSWORD: &str = "demo";

/// (SKU, initial stock). `SKU-RARE` runs out quickly, so out-of-stock compensations happen.
pub const SKUS: [(&str, u32); 5] = [
    ("SKU-BOOK", 1_000_000),
    ("SKU-LAMP", 1_000_000),
    ("SKU-MUG", 1_000_000),
    ("SKU-DESK", 1_000_000),
    ("SKU-RARE", 5),
];
