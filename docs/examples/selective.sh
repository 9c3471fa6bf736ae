METROBUS_STOPS=busdriver,AddEmail,Log faust -A metrobus_app worker     # one or two of these
METROBUS_STOPS=WhiteList faust -A metrobus_app worker                  # as many as WhiteList needs
