"""scoring's projection of contacts: attributes, identities, tombstones, engagement set aside."""
