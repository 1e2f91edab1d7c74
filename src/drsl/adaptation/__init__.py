"""adaptation package."""
