"""adaptation.drsl package."""
