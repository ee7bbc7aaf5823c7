"""The Profile API and the staff 360 page (`cdp serve`), served from the online store."""

from cdp_resources.profile_api.app import create_app, serve

__all__ = ["create_app", "serve"]
