faust -A metrobus_app routes list [--json]                 # the rules in use and where they come from
faust -A metrobus_app routes load [FILE]                   # replace the whole rule set (TOML, or .json)
faust -A metrobus_app routes set big --match '{"amount": {"min": 1000}}' --route Review,AddEmail,Log --before audit
faust -A metrobus_app routes set audit --when message_type_code=AUDIT --route AddEmail,Log+Archive
faust -A metrobus_app routes remove big
faust -A metrobus_app routes default AddEmail,WhiteList,Log
faust -A metrobus_app routes reset                         # back to the rules file
faust -A metrobus_app routes match '{"amount": 5000}'      # which rule, which route
