"""A person's data held by workflows, for the product's data subject access export."""
