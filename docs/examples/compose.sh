docker compose -f docker/docker-compose.yml up --build                    # 3 workers + worker-web
docker compose -f docker/docker-compose.yml up --build --scale worker=5   # 5 + worker-web
docker compose -f docker/docker-compose.yml down -v                       # stop and forget all state
