/* embedded.c -- `brokers: embedded`: librdkafka's mock cluster in-process.
 *
 * The mock cluster speaks the real Kafka protocol over TCP on loopback,
 * so the consumer and any external producer use it like a broker. It is
 * in memory, keeps only a few MiB per partition, and is for development:
 * nothing survives the process. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "log.h"

struct embedded {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mcluster;
};

embedded_t *embedded_start(const struct cfg *cfg, struct sl_error *err)
{
    char errstr[512];
    embedded_t *e = calloc(1, sizeof(*e));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (e == NULL) {
        rd_kafka_conf_destroy(conf);
        sl_error_set(err, "out of memory");
        return NULL;
    }
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    e->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (e->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        free(e);
        sl_error_set(err, "embedded cluster: %s", errstr);
        return NULL;
    }
    e->mcluster = rd_kafka_mock_cluster_new(e->rk, 1);
    if (e->mcluster == NULL) {
        rd_kafka_destroy(e->rk);
        free(e);
        sl_error_set(err, "embedded cluster: could not start");
        return NULL;
    }
    for (size_t i = 0; i < cfg->source.topics.count; i++) {
        rd_kafka_mock_topic_create(e->mcluster, cfg->source.topics.items[i],
                                   (int)cfg->source.embedded_partitions, 1);
    }
    if (strcmp(cfg->dlq.brokers, "embedded") == 0) {
        rd_kafka_mock_topic_create(e->mcluster, cfg->dlq.topic,
                                   (int)cfg->dlq.partitions, 1);
        for (size_t i = 0; i < cfg->sink_count; i++) {
            if (cfg->sinks[i].park_after_ms > 0) {
                char topic[512];
                snprintf(topic, sizeof(topic), "%s.retry.%s", cfg->pipeline,
                         cfg->sinks[i].name);
                rd_kafka_mock_topic_create(e->mcluster, topic,
                                           (int)cfg->dlq.partitions, 1);
            }
            if (cfg->sinks[i].dlq_topic != NULL) {
                rd_kafka_mock_topic_create(e->mcluster,
                                           cfg->sinks[i].dlq_topic,
                                           (int)cfg->dlq.partitions, 1);
            }
        }
    }
    log_info("embedded Kafka cluster ready bootstrap=%s (in memory, for "
             "development only)",
             rd_kafka_mock_cluster_bootstraps(e->mcluster));
    return e;
}

const char *embedded_bootstrap(const embedded_t *e)
{
    return rd_kafka_mock_cluster_bootstraps(e->mcluster);
}

void embedded_stop(embedded_t *e)
{
    if (e == NULL) {
        return;
    }
    rd_kafka_mock_cluster_destroy(e->mcluster);
    rd_kafka_destroy(e->rk);
    free(e);
}
