#!/usr/bin/env bash
# Run the S3-Rec table cells one after another, each into outputs/s3rec/<experiment>/seed<seed>.
# A cell whose directory already holds metrics.json is skipped, so the script can be restarted after an
# interruption; an interrupted cell resumes from its last checkpoint in the same directory (resume=true).
# Usage: bash experiments/s3rec_queue.sh [data_root]     (default ../shared/data)
#        CELLS="toys_sasrec:1 beauty_bert4rec:42" bash experiments/s3rec_queue.sh ...   runs just those cells
# Afterwards, python experiments/s3rec_table.py records every finished run in experiments/results/s3rec_runs/.
set -u
root=${1:-../shared/data}
out=outputs/s3rec
mkdir -p "$out"
cells=(
  toys_sasrec:42 sports_sasrec:42 yelp_sasrec:42
  beauty_gru4rec:42 toys_gru4rec:42 sports_gru4rec:42 yelp_gru4rec:42
  beauty_bert4rec:42 toys_bert4rec:42 sports_bert4rec:42 yelp_bert4rec:42
  toys_sasrec:1 toys_sasrec:2 sports_sasrec:1 sports_sasrec:2 yelp_sasrec:1 yelp_sasrec:2
  beauty_sasrec:42 beauty_sasrec:1 beauty_sasrec:2
)
[ -n "${CELLS:-}" ] && read -r -a cells <<< "$CELLS"
for cell in "${cells[@]}"; do
  exp=${cell%%:*}; seed=${cell##*:}
  dir=$out/$exp/seed$seed
  [ -f "$dir/metrics.json" ] && continue
  extra=()
  if [ -f "$dir/checkpoints/last.ckpt" ]; then
    extra=(resume=true)
  elif [ -d "$dir" ]; then
    mv "$dir" "$dir.interrupted-$(date +%s)"
  fi
  echo "$(date -u +%FT%TZ) start $exp seed=$seed ${extra[*]:-}" >> "$out/queue.log"
  mkdir -p "$dir"
  /usr/bin/time -a -v -o "$dir.time" recforge-train experiment="$exp" seed="$seed" dataset.root="$root" \
    hydra.run.dir="$dir" "${extra[@]}" >> "$dir.stdout" 2>&1
  rc=$?
  echo "$(date -u +%FT%TZ) end $exp seed=$seed rc=$rc" >> "$out/queue.log"
  if [ "$rc" = 2 ] && [ "${#extra[@]}" -gt 0 ]; then  # resume refused (e.g. the code's config keys changed)
    mv "$dir" "$dir.interrupted-$(date +%s)"; mv "$dir.time" "$dir.interrupted.time" 2>/dev/null
    echo "$(date -u +%FT%TZ) restart $exp seed=$seed from scratch" >> "$out/queue.log"
    /usr/bin/time -v -o "$dir.time" recforge-train experiment="$exp" seed="$seed" dataset.root="$root" \
      hydra.run.dir="$dir" >> "$dir.stdout" 2>&1
    echo "$(date -u +%FT%TZ) end $exp seed=$seed rc=$?" >> "$out/queue.log"
  fi
done
