"""The lead store: tables, migrations, tenant-scoped sessions and queries."""

from leads.store.database import Store, TenantScope

__all__ = ["Store", "TenantScope"]
