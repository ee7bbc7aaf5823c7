"""The online store stage: keeps the store the Profile API serves (`cdp serve`) up to date with the warehouse."""
