"""The service layer: every operation, once. The HTTP adapters (native, Daytona) call these."""
