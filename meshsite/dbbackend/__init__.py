"""Django's PostgreSQL backend with the store breaker (meshsite.storebreaker) in front of
its connection pool, so that an outage is answered at once instead of after a pool wait."""
