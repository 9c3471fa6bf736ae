"""The web views and the dashboard, added to Faust's own web server."""
