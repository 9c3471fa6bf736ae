faust -A metrobus_app worker -l info                       # the whole bus
faust -A metrobus_app make-data --out data --accounts 100000 --seed 42
faust -A metrobus_app warm --emails data/emails.dat --whitelist data/whitelist.dat
faust -A metrobus_app push --count 1000 --rate 100
faust -A metrobus_app settings                             # every setting and its value here
